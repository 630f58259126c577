"""UI flows in a real browser (Playwright driving Debian's chromium) against `make dev`."""
