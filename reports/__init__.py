"""Post-incident reports: metrics, commitment checks, Jinja2 templates and renderers."""
