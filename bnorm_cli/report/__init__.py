"""Reports: the per-column summary (Markdown, JSON), the HTML report and what it samples."""
