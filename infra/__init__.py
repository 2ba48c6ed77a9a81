"""
What every app stands on and nothing else: database work off the event loop, the request id
of the request being served, and the pages' Content-Security-Policy. Imports no app.
"""
