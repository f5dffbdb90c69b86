"""Self-contained HTML pages: ``seedlock report --html`` (`_page`) and the
HTML/CSS/SVG helpers other pages can reuse (`_html`). Imported lazily by the
command line only: ``import langchain_seedlock`` never loads it."""
