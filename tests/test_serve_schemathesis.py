"""schemathesis over the server's own OpenAPI schema, on a real loopback server (issue 14).

Every operation in /openapi.json (including the request bodies of /predict and /v2/.../infer) gets
schema-valid and schema-violating requests; the check is schemathesis' `not_a_server_error`: no 5xx.
Bounded for `make test` (OCULA_SCHEMATHESIS_EXAMPLES, default 25 per operation and mode); `make fuzz`
raises it. OCULA_SCHEMATHESIS_REPORT=PATH.json writes what ran.
"""
from __future__ import annotations

import json
import os
import time

import pytest

schemathesis = pytest.importorskip("schemathesis")
pytest.importorskip("fastapi")

from hypothesis import HealthCheck, given, settings  # noqa: E402

from ocula.serve import create_app  # noqa: E402
from ocula.serve.runner import BackgroundServer  # noqa: E402

EXAMPLES = int(os.environ.get("OCULA_SCHEMATHESIS_EXAMPLES", "25"))


@pytest.fixture(scope="module")
def live_server(digits_run):
    from ocula.inference.predictor import Classifier

    app = create_app(Classifier.load(digits_run, device="cpu"), "digits", max_wait_ms=1, max_body_bytes=2 ** 20)
    with BackgroundServer(app) as server:
        yield server


def test_every_operation_never_a_server_error(live_server):
    import requests
    from schemathesis import GenerationMode
    from schemathesis.checks import not_a_server_error

    schema = schemathesis.openapi.from_url(f"{live_server.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10
    session = requests.Session()
    ran, statuses, server_errors = [], {}, []
    start = time.perf_counter()
    for op in operations:
        # random path parameters mostly find 404s: also pin them to this model, to reach the parsers
        pinned = {k: v for k, v in (("name", "digits"), ("version", "1")) if "{" + k + "}" in op.path}
        variants = [(mode, None) for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)]
        variants += [(mode, pinned) for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE) if pinned]
        for mode, path_parameters in variants:
            calls = [0]

            @settings(max_examples=EXAMPLES, deadline=None, database=None,
                      suppress_health_check=list(HealthCheck))
            @given(case=op.as_strategy(generation_mode=mode, path_parameters=path_parameters))
            def run(case):
                calls[0] += 1
                response = case.call(base_url=live_server.url, session=session, timeout=30)
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
                if response.status_code >= 500:
                    server_errors.append((op.label, response.status_code, response.text[:200]))
                case.validate_response(response, checks=[not_a_server_error])

            try:
                run()
            except Exception as e:  # noqa: BLE001 - the schema cannot express a negative case for this one
                if "server error" in str(e).lower() or server_errors:
                    raise
                if type(e).__name__ not in ("Unsatisfiable", "FailedHealthCheck", "SkipTest") and \
                        "negative" not in str(e).lower():
                    raise
            ran.append({"operation": op.label, "mode": mode.value, "path": "pinned" if path_parameters else "random",
                        "requests": calls[0]})
    seconds = time.perf_counter() - start
    report = {"operations": len(operations), "runs": ran, "requests": sum(r["requests"] for r in ran),
              "checks": ["not_a_server_error"], "statuses": {str(k): v for k, v in sorted(statuses.items())},
              "server_errors": len(server_errors), "seconds": round(seconds, 1), "examples_setting": EXAMPLES}
    if os.environ.get("OCULA_SCHEMATHESIS_REPORT"):
        with open(os.environ["OCULA_SCHEMATHESIS_REPORT"], "w") as f:
            json.dump(report, f, indent=2)
    assert not server_errors, server_errors[:5]
    assert report["requests"] >= len(operations) * 2
