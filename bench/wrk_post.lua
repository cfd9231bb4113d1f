-- wrk script: POST the body in BODY_FILE; HEADER_LEN, when set, marks a binary tensor request.
wrk.method = "POST"
local f = assert(io.open(os.getenv("BODY_FILE"), "rb"))
wrk.body = f:read("*a")
f:close()
local header_len = os.getenv("HEADER_LEN")
if header_len and header_len ~= "" then
  wrk.headers["Inference-Header-Content-Length"] = header_len
  wrk.headers["Content-Type"] = "application/octet-stream"
else
  wrk.headers["Content-Type"] = "application/json"
end
