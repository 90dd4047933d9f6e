"""Metrics, auth, the status page and the OpenAPI document, against one running control plane
(a real tritonserver, two small identity models; tokens configured as in compose)."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from multiprocessing.shared_memory import SharedMemory
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.utils import InferenceServerException

from controlplane.app import ControlPlane
from controlplane.config import load_settings
from tests.conftest import ROOT
from tests.support.gateway import gateway_client, identity_input
from tests.support.repository import add_identity

pytestmark = pytest.mark.asyncio(loop_scope="module")

READ = "read-token-0123456789abcdef"
ADMIN = "admin-token-0123456789abcdef"
#: where the browser test leaves its screenshot (CI keeps nothing; a developer looks at it)
SCREENSHOT_DIR = Path(os.environ.get("WARMCTL_TEST_ARTIFACTS", "/tmp/warmctl-test-artifacts"))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def cp(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[ControlPlane]:
    tmp = tmp_path_factory.mktemp("observability")
    repo = tmp / "repository"
    add_identity(repo, "ident")
    add_identity(repo, "warm")
    add_identity(repo, "other")
    settings = load_settings(
        data_dir=tmp / "state", model_repository=repo, backends_dir=ROOT / "triton_backends",
        admin={"port": 0, "read_token": READ, "admin_token": ADMIN},
        gateway={"port": 0, "http_port": 0}, triton={"stop_timeout_s": 5, "load_timeout_s": 60},
        traffic={"flush_interval_s": 0.2}, models={"warm": {"pinned": True}})
    control = ControlPlane(settings)
    await control.start(wait_pinned=True)
    yield control
    await control.stop()


def _auth(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


async def _call(cp: ControlPlane, method: str, path: str, token: str | None = ADMIN,
                **kw: Any) -> httpx.Response:
    headers = {**_auth(token), **kw.pop("headers", {})}
    async with httpx.AsyncClient(base_url=cp.admin_url, timeout=60) as http:
        return await http.request(method, path, headers=headers, **kw)


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _value(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str,
           **labels: str) -> float:
    """A sample of a family of the whole control plane (no Triton instance label)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def _here(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str,
          **labels: str) -> float:
    """A sample of a per-instance family, on the one Triton instance (``default``)."""
    return _value(samples, name, triton_instance="default", **labels)


def _infer(cp: ControlPlane, model: str, n: int) -> None:
    with gateway_client(cp) as client:
        for _ in range(n):
            client.infer(model, identity_input([[1.0, 2.0]]))


async def test_metrics_count_what_was_sent_and_pass_promtool(cp: ControlPlane) -> None:
    assert cp.recorder is not None
    await asyncio.to_thread(_infer, cp, "ident", 5)  # the first is a cold start (a lazy load)
    await asyncio.to_thread(_infer, cp, "warm", 3)
    assert (await _call(cp, "POST", "/models/other/load")).status_code == 200
    await cp.recorder.flush()
    response = await _call(cp, "GET", "/metrics", token=READ)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    s = _samples(response.text)
    assert _value(s, "warmctl_requests_total", model="ident", outcome="OK") == 5
    assert _value(s, "warmctl_requests_total", model="warm", outcome="OK") == 3
    assert _value(s, "warmctl_cold_starts_total", model="ident") == 1
    assert _value(s, "warmctl_cold_starts_total", model="warm") == 0
    assert _value(s, "warmctl_lazy_load_wait_seconds_count", model="ident") == 1
    assert _value(s, "warmctl_lazy_load_wait_seconds_sum", model="ident") > 0
    ops = "warmctl_model_operations_total"
    assert _here(s, ops, action="load", trigger="gateway", outcome="ok") == 1
    assert _here(s, ops, action="load", trigger="api", outcome="ok") == 1
    assert _here(s, ops, action="load", trigger="startup", outcome="ok") == 1
    assert _here(s, "warmctl_model_operation_duration_seconds_count", action="load",
                 trigger="api", outcome="ok") == 1
    for model in ("ident", "warm", "other"):
        assert _here(s, "warmctl_model_state", model=model, state="ready") == 1
        assert ("warmctl_model_state", frozenset({("triton_instance", "default"),
                                                  ("model", model), ("state", "cold")})) in s
        assert _here(s, "warmctl_model_state", model=model, state="cold") == 0
    assert _here(s, "warmctl_model_level", model="ident", level="cpu") == 1
    assert _here(s, "warmctl_triton_up") == 1
    assert ("warmctl_gateway_in_flight_requests", frozenset()) in s
    assert _value(s, "warmctl_gateway_in_flight_requests") == 0
    # Prometheus sets instance and job to the scrape target's (renaming ours)
    assert not {label for _, labels in s for label, _ in labels} & {"instance", "job"}
    assert _value(s, "warmctl_recorder_written_total") >= 8
    for reason in ("full", "error", "stopped"):
        assert ("warmctl_recorder_dropped_total", frozenset({("reason", reason)})) in s
        assert _value(s, "warmctl_recorder_dropped_total", reason=reason) == 0
    assert _value(s, "warmctl_store_state", state="ok") == 1
    assert _value(s, "warmctl_store_writes_total", kind="event") >= 6  # 3 loads, 2 records each
    assert _value(s, "warmctl_store_writes_dropped_total", kind="event", reason="full") == 0
    info = [labels for (name, labels) in s if name == "warmctl_triton_info"]
    assert cp.instance is not None and cp.instance.metrics is not None
    assert ("metrics_url", cp.instance.metrics.url) in info[0]

    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("CI"):
            pytest.fail("promtool missing: scripts/install.sh --dev installs it")
        pytest.skip("promtool not installed (apt-get install prometheus)")
    checked = await asyncio.to_thread(
        subprocess.run, [promtool, "check", "metrics"], input=response.text,
        capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0, checked.stdout + checked.stderr


async def test_every_route_by_token(cp: ControlPlane) -> None:
    """No token: 401; read token: GETs only; admin token: everything. Health stays open."""
    public = {("GET", p) for p in ("/healthz", "/readyz")}
    restart = ("POST", "/triton/restart")  # with the admin token: below, on its own
    spec = (await _call(cp, "GET", "/openapi.json", token=None)).json()
    documented = {(m.upper(), path) for path, ops in spec["paths"].items() for m in ops}
    calls = sorted(documented - public - {restart}, key=lambda c: (c[0] != "GET", c))
    assert ("POST", "/models/{name}/unload") in calls and len(calls) >= 15
    for method, template in [*calls, restart]:
        # reads look at ``ident``; writes act on ``other`` (it may end unloaded)
        path = template.replace("{name}", "ident" if method == "GET" else "other")
        none = await _call(cp, method, path, token=None)
        assert none.status_code == 401, (path, none.text)
        assert none.json()["error"]["code"] == "unauthenticated"
        assert none.headers["www-authenticate"] == "Bearer"
        wrong = await _call(cp, method, path, token="not-" + ADMIN)
        assert wrong.status_code == 401
        read = await _call(cp, method, path, token=READ)
        if method == "GET":
            assert read.status_code not in (401, 403), (path, read.text)
        else:
            assert read.status_code == 403 and \
                read.json()["error"]["code"] == "permission_denied", (path, read.text)
        if (method, template) == restart:
            continue
        admin = await _call(cp, method, path, token=ADMIN)
        assert admin.status_code not in (401, 403, 500), (path, admin.text)
    for path in ("/healthz", "/readyz", "/", "/docs", "/redoc", "/openapi.json",
                 "/static/status.js"):
        assert (await _call(cp, "GET", path, token=None)).status_code == 200, path


async def test_an_operator_restart_of_triton_shows_in_the_metrics(cp: ControlPlane) -> None:
    restarted = await _call(cp, "POST", "/triton/restart", token=ADMIN)
    assert restarted.status_code == 200, restarted.text
    s = _samples((await _call(cp, "GET", "/metrics", token=READ)).text)
    assert _here(s, "warmctl_triton_restarts_total") == 1
    assert _here(s, "warmctl_triton_outages_total") >= 1
    assert _here(s, "warmctl_triton_up") == 1
    assert _here(s, "warmctl_model_state", model="warm", state="ready") == 1
    assert _here(s, "warmctl_model_operations_total", action="load", trigger="restore",
                 outcome="ok") >= 1


async def test_cross_site_writes_are_refused(cp: ControlPlane) -> None:
    evil = {"Origin": "http://evil.example", "Content-Type": "text/plain"}
    refused = await _call(cp, "POST", "/models/warm/unload?force=true", headers=evil)
    assert refused.status_code == 403
    assert "cross-origin" in refused.json()["error"]["message"]
    site = await _call(cp, "POST", "/models/warm/unload?force=true",
                       headers={"Sec-Fetch-Site": "cross-site"})
    assert site.status_code == 403
    assert cp.manager is not None and cp.manager.state("warm").value == "ready"
    preflight = await _call(cp, "OPTIONS", "/models/warm/unload", headers={
        "Origin": "http://evil.example", "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in preflight.headers
    own = cp.admin_url.removeprefix("http://")
    same = await _call(cp, "POST", "/models/other/release",
                       headers={"Origin": f"http://{own}"})
    assert same.status_code == 200


async def test_cli_sends_its_token(cp: ControlPlane, capsys: pytest.CaptureFixture[str]) -> None:
    from controlplane.cli import main

    base = ["status", "--admin-url", cp.admin_url]
    with pytest.raises(SystemExit, match="401: a bearer token is required"):
        await asyncio.to_thread(main, [*base, "--token", ""])
    assert await asyncio.to_thread(main, [*base, "--token", READ]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[1].split()[:2] == ["MODEL", "STATE"]
    assert "warm" in out and READ not in out


async def test_gateway_server_wide_rpcs_need_the_admin_token(cp: ControlPlane) -> None:
    def run() -> None:
        region = SharedMemory("obs_region", create=True, size=64)  # /dev/shm/obs_region
        try:
            with gateway_client(cp) as client:
                with pytest.raises(InferenceServerException, match="ALLOW_SHARED_MEMORY"):
                    client.register_system_shared_memory("obs_region", "/obs_region", 64)
                with pytest.raises(InferenceServerException, match="ALLOW_SERVER_SETTINGS"):
                    client.update_log_settings({"log_verbose_level": 1})
                with pytest.raises(InferenceServerException, match="REPOSITORY_CONTROL"):
                    client.unload_model("other")
                assert client.get_log_settings()  # reading stays open
                headers = {"authorization": f"Bearer {ADMIN}"}
                client.register_system_shared_memory("obs_region", "/obs_region", 64,
                                                     headers=headers)
                status = client.get_system_shared_memory_status()
                assert "obs_region" in str(status)
                client.unregister_system_shared_memory("obs_region", headers=headers)
                with pytest.raises(InferenceServerException, match="ALLOW_SHARED_MEMORY"):
                    client.unregister_system_shared_memory(
                        headers={"authorization": f"Bearer {READ}"})
        finally:
            region.close()
            region.unlink()

    await asyncio.to_thread(run)


async def test_openapi_documents_errors_and_unknown_routes_answer_in_shape(
        cp: ControlPlane) -> None:
    spec = (await _call(cp, "GET", "/openapi.json", token=None)).json()
    assert "Error" in spec["components"]["schemas"]
    for path, operations in spec["paths"].items():
        for method, op in operations.items():
            codes = set(op["responses"])
            assert {"403", "500"} <= codes, (method, path)
            if path not in ("/healthz", "/readyz"):
                assert {"401", "503"} <= codes, (method, path)
                assert op["responses"]["401"]["content"]["application/json"]["schema"] == {
                    "$ref": "#/components/schemas/Error"}
            if "{name}" in path:
                assert "404" in codes, (method, path)
    unknown = await _call(cp, "GET", "/no/such/route")
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "not_found"
    wrong = await _call(cp, "DELETE", "/models")
    assert wrong.status_code == 405
    assert wrong.json()["error"]["code"] == "method_not_allowed"
    docs = (await _call(cp, "GET", "/docs", token=None)).text
    assert "/static/docs/swagger-ui-bundle.js" in docs and "cdn" not in docs.lower()
    redoc = (await _call(cp, "GET", "/redoc", token=None)).text
    assert "/static/docs/redoc.standalone.js" in redoc and "fonts.googleapis" not in redoc
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js"):
        assert (await _call(cp, "GET", f"/static/docs/{asset}", token=None)).status_code == 200


async def test_plan_says_where_each_replica_goes_and_why(cp: ControlPlane) -> None:
    assert cp.scheduler is not None
    await cp.scheduler.tick()  # the policy's decisions -> the replica plan
    plan = (await _call(cp, "GET", "/plan", token=READ)).json()
    assert [(i["name"], i["routable"], i["draining"]) for i in plan["instances"]] == [
        ("default", True, False)]
    assert "warm" in plan["instances"][0]["planned"] and "warm" in plan["instances"][0]["resident"]
    warm = next(m for m in plan["models"] if m["model"] == "warm")
    assert [(r["instance"], r["state"]) for r in warm["replicas"]] == [("default", "ready")]
    assert warm["replicas"][0]["why"] and warm["unplaced"] is None
    assert plan["unplaced"] == {} and isinstance(plan["fleet_actions"], list)
    listed = (await _call(cp, "GET", "/instances", token=READ)).json()
    assert [i["name"] for i in listed] == ["default"] and listed[0]["planned"] == \
        plan["instances"][0]["planned"]


async def test_status_page_in_a_browser(cp: ControlPlane) -> None:
    """Headless chromium loads the page, whose figures must equal the API's."""
    playwright_api = pytest.importorskip("playwright.async_api")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        if os.environ.get("CI"):
            pytest.fail("chromium missing: scripts/install.sh --dev installs it")
        pytest.skip("chromium not installed (apt-get install chromium)")
    await asyncio.to_thread(_infer, cp, "ident", 2)
    assert cp.recorder is not None and cp.scheduler is not None
    await cp.recorder.flush()
    await cp.scheduler.tick()  # a replica plan: planned replicas to show
    api = (await _call(cp, "GET", "/status", token=READ)).json()
    async with playwright_api.async_playwright() as p:
        browser = await p.chromium.launch(executable_path=chromium,
                                          args=["--no-sandbox", "--disable-gpu"])
        try:
            page = await browser.new_page(viewport={"width": 1400, "height": 900})
            requests: list[str] = []
            page.on("request", lambda r: requests.append(r.url))
            await page.goto(f"{cp.admin_url}/#token={READ}")
            await page.wait_for_selector("body[data-loaded]", timeout=20_000)
            assert "token" not in page.url  # taken out of the address bar
            for model in api["models"]:
                row = page.locator(f'#models tr[data-model="{model["name"]}"]')
                assert await row.locator('[data-field="state"]').inner_text() == model["state"]
                assert await row.locator('[data-field="level"]').inner_text() == model["level"]
                assert int(await row.locator('[data-field="requests"]').inner_text()) \
                    == model["requests"]
                assert int(await row.locator('[data-field="cold_starts"]').inner_text()) \
                    == model["cold_starts"]
                # replicas: the instances it is ready on (one instance here), and the plan's
                ready = sum(r["state"] == "ready" for r in model["instances"])
                assert model["replicas"] == ready == (1 if model["state"] == "ready" else 0)
                planned = model["planned_replicas"]
                assert await row.locator('[data-field="replicas"]').inner_text() == \
                    f"{ready} ready" + ("" if planned is None else f" / {planned} planned")
                assert model["instances_per_replica"] == 1  # instance_group count 1
                assert await row.locator('[data-field="instances_per_replica"]').inner_text() \
                    == "1 instance per replica"
                cells = page.locator(f'#heatmap [data-model="{model["name"]}"] .cells i')
                assert await cells.count() == api["minutes"]
            warm = next(m for m in api["models"] if m["name"] == "warm")  # pinned: ready
            assert (warm["replicas"], warm["planned_replicas"]) == (1, 1)
            ident = next(m for m in api["models"] if m["name"] == "ident")
            assert ident["requests"] >= 2 and ident["cold_starts"] == 1  # alone or after others
            bars = page.locator('#instances [data-instance="default"] .bar')
            assert await bars.count() == 2
            # the instances table: one row per Triton instance, as /status has it
            inst = api["instances"][0]
            assert "warm" in inst["models"] and inst["draining"] is False
            row = page.locator('#instance-table tr[data-instance="default"]')
            assert await row.locator('[data-field="state"]').inner_text() == inst["triton"]
            assert await row.locator('[data-field="routing"]').inner_text() == "routable"
            assert int(await row.locator('[data-field="outstanding"]').inner_text()) \
                == inst["outstanding"]
            resident = await row.locator('[data-field="models"]').inner_text()
            assert all(name in resident for name in inst["models"]), resident
            await asyncio.to_thread(SCREENSHOT_DIR.mkdir, parents=True, exist_ok=True)
            await page.screenshot(path=str(SCREENSHOT_DIR / "status-page.png"), full_page=True)
            await page.goto(f"{cp.admin_url}/docs")  # Swagger UI, from warmctl's own assets
            await page.wait_for_selector(".swagger-ui .opblock", timeout=20_000)
            assert await page.locator(".swagger-ui .opblock").count() >= 15
            await page.screenshot(path=str(SCREENSHOT_DIR / "docs.png"))
            origin = cp.admin_url
            assert all(url.startswith(origin) for url in requests), requests  # no CDN
        finally:
            await browser.close()



async def test_schemathesis_finds_no_5xx_and_nothing_outside_the_schema(
        cp: ControlPlane, tmp_path: Path) -> None:
    """Bounded: a few generated cases per operation, one worker, a hard time limit. Left
    out: the Triton restart (tested on its own; it would restart Triton mid-run), adding and
    removing instances (``test_elastic_fleet.py``: a generated ``force`` would retire the
    fleet's only instance, and an added one starts a tritonserver per case) and the
    probes, whose documented 503 is their answer while a pinned model is cold (the run
    unloads pinned models with ``force``)."""
    st = Path(os.environ.get("VIRTUAL_ENV", ROOT / ".venv")) / "bin" / "schemathesis"
    if not st.exists():
        pytest.skip("schemathesis not installed (scripts/install.sh --dev)")
    checks = ("not_a_server_error,status_code_conformance,content_type_conformance,"
              "response_schema_conformance")
    command = [str(st), "run", f"{cp.admin_url}/openapi.json", "--checks", checks,
               "-H", f"Authorization: Bearer {ADMIN}", "--max-examples", "5", "--seed", "11",
               "--workers", "1", "--no-shrink", "--max-time", "40",
               "--phases", "examples,coverage,fuzzing", "--exclude-path", "/triton/restart",
               "--exclude-path", "/healthz", "--exclude-path", "/readyz",
               "--exclude-operation-id", "add_instance_instances_post",
               "--exclude-operation-id", "remove_instance_instances__name__delete",
               "--suppress-health-check", "all", "--request-timeout", "30"]
    run = await asyncio.to_thread(subprocess.run, command, capture_output=True, text=True,
                                  timeout=150, env={**os.environ, "NO_COLOR": "1"},
                                  cwd=tmp_path)  # its cache directory lands there
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
