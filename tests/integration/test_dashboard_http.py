"""The dashboard's own routes: the page and its policy, the vendor modules by name only, the way there."""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

import pytest

from queries import dashboard
from tests.conftest import Running


def test_root_leads_to_the_dashboard(running: Running) -> None:
    answer = running.http.get("/", follow_redirects=False)
    assert answer.status_code == 307 and answer.headers["location"] == "/dashboard"


def test_the_page_needs_no_key_and_allows_only_its_own_scripts(running: Running) -> None:
    answer = running.http.get("/dashboard")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/html")
    policy = answer.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "'unsafe-eval'" not in policy and "frame-ancestors 'none'" in policy
    (import_map,) = re.findall(r'<script type="importmap">(.*?)</script>', answer.text, re.S)
    digest = base64.b64encode(hashlib.sha256(import_map.encode()).digest()).decode()
    assert f"'sha256-{digest}'" in policy  # the one inline script, by its hash
    assert "http://" not in answer.text and "https://" not in answer.text  # nothing from elsewhere


def test_every_module_the_page_imports_is_served(running: Running) -> None:
    page = running.http.get("/dashboard").text
    for path in re.findall(r'"(/dashboard/[^"]+)"', page) + ["/dashboard/app/main.js"]:
        answer = running.http.get(path)
        assert answer.status_code == 200, path
        assert answer.headers["content-type"].split(";")[0] in ("text/javascript", "text/css"), path
    app = Path(dashboard.HERE / "app")
    for module in app.rglob("*.js"):  # the page's modules import only each other and the import map's names
        for spec in re.findall(r'^import .*? from "([^"]+)";', module.read_text(), re.M):
            assert spec.startswith(".") or spec in ("preact", "preact/hooks", "htm", "uplot"), (module, spec)


def test_only_the_named_vendor_files_are_served(running: Running) -> None:
    answer = running.http.get("/dashboard/vendor/package.json")
    assert answer.status_code == 404 and answer.json()["code"] == "not_found"
    assert running.http.get("/dashboard/vendor/..%2Fpackage.json").status_code == 404
    assert running.http.get("/dashboard/app/../../dashboard.py").status_code == 404


def test_without_the_npm_packages_the_page_says_what_to_run(running: Running, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setattr(dashboard, "MODULES", tmp_path)  # a checkout where `make install` has not run npm ci
    answer = running.http.get("/dashboard")
    assert answer.status_code == 503 and "make install" in answer.text
    vendor = running.http.get("/dashboard/vendor/preact.js")
    assert vendor.status_code == 503 and vendor.json()["code"] == "dashboard_not_installed"
    assert running.http.get("/healthz").status_code == 200  # the API is unaffected
