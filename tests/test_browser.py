"""The browser fixture itself: a real Chromium renders a page, reports its console errors and its requests."""


def test_chromium_renders_reports_console_errors_and_requests(chromium, tmp_path):
    page = tmp_path / "p.html"
    page.write_text("<h1 id=x>hi</h1><img src='missing.png'><script>console.error('boom')</script>")
    chromium.get(page.as_uri())
    assert chromium.find_element("id", "x").text == "hi"
    errors = chromium.console_errors()
    assert any("boom" in e for e in errors) and any("missing.png" in e for e in errors)
    assert sorted(u.rsplit("/", 1)[-1] for u in chromium.requests()) == ["missing.png", "p.html"]
    shot = chromium.screenshot(tmp_path / "s.png")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
