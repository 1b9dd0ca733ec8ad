"""The API documentation pages work without the internet: every script and style comes from the app itself."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest

from tests.conftest import Running


class _Assets(HTMLParser):
    """The URLs a page loads: script src, link href (styles, icons), img src."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        wanted = {"script": "src", "link": "href", "img": "src"}.get(tag)
        self.urls += [value for name, value in attrs if name == wanted and value]


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_the_docs_pages_load_their_scripts_and_styles_from_the_app(running: Running, page: str) -> None:
    response = running.http.get(page)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    assets = _Assets()
    assets.feed(response.text)
    assert any(url.endswith(".js") for url in assets.urls), assets.urls
    if page == "/docs":
        assert any(url.endswith(".css") for url in assets.urls), assets.urls
    assert "cdn" not in response.text.lower() and "fonts.googleapis" not in response.text, response.text
    for url in assets.urls:
        assert url.startswith("/") and not url.startswith("//"), f"{page} loads {url} from elsewhere"
        loaded = running.http.get(url)
        assert loaded.status_code == 200 and loaded.content, url
    assert running.http.get("/openapi.json").status_code == 200
