"""The pruned deps-serve layer (layers/deps-serve/prune.txt) is not only small but
sufficient: in a fresh interpreter that sees only the standard library, the `ctr` layer
and exactly the layer's remaining files (as in Lambda), the predict handler imports,
and a real bundle predicts, explains, parses TSV and JSON input (also with Arrow's JSON
reader), reads Parquet and scores a batch block."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ctr import criteo
from ctr_infra import sizes
from tests.unit.serving_support import sample_table, tiny_predictor

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import io, json, os, sys
sys.path[:0] = [os.environ["FUNCTION_DIR"], os.environ["CTR_DIR"], os.environ["DEPS_DIR"]]
import app                                        # the predict handler, as Lambda loads it
import boto3                  # the prediction log's and /monitoring's clients load their models
clients = [boto3.client(name, region_name="us-east-1", aws_access_key_id="x",
                        aws_secret_access_key="x") for name in ("s3", "firehose", "cloudwatch")]
from pathlib import Path
import pyarrow as pa, pyarrow.parquet as pq
from ctr import criteo, scoring
from ctr.predictor import Predictor
from ctr.serving import schemas
work = Path(os.environ["WORK_DIR"])
predictor = Predictor.load(work)
lines = (work / "lines.tsv").read_text().splitlines()
table, errors = criteo.lines_to_table(lines)
rows = criteo.rows_to_table(json.loads((work / "rows.json").read_text()))
from ctr.serving import fast_json         # large bodies are read by Arrow's JSON reader
body = json.dumps({"rows": json.loads((work / "rows.json").read_text())}).encode()
assert fast_json.rows_body_table(body).equals(rows)
why = predictor.explain_table(table)
parquet = pq.read_table(pa.BufferReader((work / "part.parquet").read_bytes()))
part, rejects, n_lines, n_rows, n_rejects = scoring.score_bytes(
    predictor, ("\\n".join(lines) + "\\nbad line\\n").encode())
print(json.dumps({"errors": errors, "predictions": predictor.predict_table(rows).tolist(),
                  "explained": why.probabilities.tolist(), "parquet_rows": parquet.num_rows,
                  "scored": [n_lines, n_rows, n_rejects],
                  "sklearn": "sklearn" in sys.modules, "mlflow": "mlflow" in sys.modules}))
"""


def test_the_handlers_import_and_serve_with_only_the_pruned_layer(tmp_path):
    closure = sizes.resolve(ROOT / "layers" / "deps-serve" / "requirements.txt")
    assert closure.prune and closure.pruned > 100e6          # the rules are in effect
    assert closure.total / 1e6 + sizes.dir_size(ROOT / "layers" / "ctr") / 1e6 < 250
    deps = tmp_path / "deps"
    sizes.materialize(closure, deps)
    assert not (deps / "scipy" / "stats").exists()
    assert not list(deps.glob("pyarrow/libarrow_flight*"))
    table = sample_table().slice(0, 50)
    predictor = tiny_predictor(1)
    predictor.save(tmp_path)
    features = table.select(list(criteo.FEATURE_SCHEMA.names))
    (tmp_path / "lines.tsv").write_text("\n".join(criteo.table_to_lines(features, False)))
    (tmp_path / "rows.json").write_text(json.dumps(features.to_pylist()))
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    (tmp_path / "part.parquet").write_bytes(sink.getvalue().to_pybytes())
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path),
           **sizes._PROBE_ENV, "WEB_DIR": str(ROOT / "web"),
           "FUNCTION_DIR": str(ROOT / "functions" / "predict"),
           "CTR_DIR": str(ROOT / "layers" / "ctr" / "python"), "DEPS_DIR": str(deps),
           "WORK_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-I", "-S", "-c", PROBE], env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    expected = predictor.predict_table(features).tolist()
    assert answer["errors"] == []
    assert answer["predictions"] == expected == answer["explained"]
    assert answer["parquet_rows"] == 50
    assert answer["scored"] == [51, 50, 1]
    assert answer["sklearn"] is False and answer["mlflow"] is False
