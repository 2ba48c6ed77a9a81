"""
The Content-Security-Policy of the HTML pages (docs, playground, the browsable API and its
login page): they load nothing from another origin, so they work offline and never contact a
third party even if a bundled script tries, and no other site may frame them.
"""

OFFLINE_PAGE_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; font-src 'self' data:; worker-src 'self' blob:; "
    "connect-src 'self'; frame-ancestors 'none'"
)
