from tests.teams import key_pepper, make_key, team  # noqa: F401
