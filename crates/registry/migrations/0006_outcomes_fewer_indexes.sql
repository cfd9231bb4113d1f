-- Every prediction of a monitored model is inserted here, so each index costs on the serving path. (model, at) was
-- served by nothing the primary key (per-model deletes) and the partial labelled index (live quality) do not cover.
DROP INDEX IF EXISTS outcomes_model_at;
