"""One timed Evidently run, started by bench/drift/run.py in its own process so that its peak RSS is its own.

Usage: python3 bench/drift/evidently_run.py SPEC.json OUT.json
SPEC.json: {"reference": path, "current": path, "numerical": [names], "categorical": [names]}
OUT.json: {"versions": {...}, "load_seconds": float, "report_seconds": float,
           "columns": {name: {"method": name, "score": float, "drifted": bool}}, "drifted_share": float}

Evidently 0.7's `Report([DataDriftPreset()])` is run on pandas frames read with `pd.read_csv` (defaults); the column
types are given (numbers as numerical, text as categorical: what ferry infers from the same files). The report's
time includes wrapping the frames in `Dataset`s.
"""

import json
import sys
import time

import pandas as pd

import evidently
import evidently.legacy.calculations.stattests as stattests
from evidently import DataDefinition, Dataset, Report
from evidently.legacy.calculations.stattests import StatTest
from evidently.presets import DataDriftPreset


def main(spec_path, out_path):
    with open(spec_path) as f:
        spec = json.load(f)

    started = time.perf_counter()
    reference = pd.read_csv(spec["reference"])
    current = pd.read_csv(spec["current"])
    loaded = time.perf_counter()

    definition = DataDefinition(numerical_columns=spec["numerical"], categorical_columns=spec["categorical"])
    report = Report([DataDriftPreset()], include_tests=True)
    snapshot = report.run(
        current_data=Dataset.from_pandas(current, data_definition=definition),
        reference_data=Dataset.from_pandas(reference, data_definition=definition),
    )
    reported = time.perf_counter()

    result = snapshot.dict()
    # The report names tests by their display names ("K-S p_value"); ferry by Evidently's short names ("ks").
    short = {v.display_name: v.name for v in vars(stattests).values() if isinstance(v, StatTest)}
    columns, by_metric, share = {}, {}, None
    for metric in result["metrics"]:
        config = metric["config"]
        if config["type"].endswith(":ValueDrift"):
            by_metric[metric["id"]] = config["column"]
            columns[config["column"]] = {"method": short.get(config["method"], config["method"]),
                                         "score": float(metric["value"])}
        elif config["type"].endswith(":DriftedColumnsCount"):
            share = float(metric["value"]["share"])
    # The verdict per column is the status of its ValueDrift test: FAIL when the column drifted.
    for test in result["tests"]:
        column = by_metric.get(test["metric_config"]["metric_id"])
        if column is not None:
            columns[column]["drifted"] = test["status"] == "FAIL"

    out = {
        "versions": {"evidently": evidently.__version__, "pandas": pd.__version__},
        "load_seconds": loaded - started,
        "report_seconds": reported - loaded,
        "columns": columns,
        "drifted_share": share,
    }
    with open(out_path, "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
