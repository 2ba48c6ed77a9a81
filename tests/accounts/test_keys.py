import stat

from accounts import keys
from infra.runtime import get_runtime


def test_generated_key_has_the_documented_shape_and_splits_back():
    new = keys.generate_key()
    assert new.full.startswith("llm_") and new.full.count("_") >= 2
    assert keys.split_key(new.full) == (new.prefix, new.secret)
    assert len(new.prefix) == keys.PREFIX_LENGTH


def test_malformed_keys_do_not_split():
    for candidate in ("", "llm_", "llm_short_x", "llm_abcdefgh_", "sk-abcdefgh_x", "llm_abcdefgh"):
        assert keys.split_key(candidate) is None


def test_only_the_right_secret_matches_its_hash():
    stored = keys.hash_secret("the-secret")
    assert "the-secret" not in stored
    assert keys.secret_matches("the-secret", stored)
    assert not keys.secret_matches("the-secreT", stored)


def test_hash_depends_on_the_pepper(settings):
    first = keys.hash_secret("s")
    settings.API_KEYS_PEPPER = "another-pepper"
    assert keys.hash_secret("s") != first


def test_pepper_file_is_generated_once_private_and_reused(settings, tmp_path):
    settings.API_KEYS_PEPPER = ""
    settings.API_KEYS_PEPPER_FILE = tmp_path / "var" / "pepper"
    generated = keys.pepper()
    assert len(generated) >= 40
    assert stat.S_IMODE(settings.API_KEYS_PEPPER_FILE.stat().st_mode) == 0o600
    get_runtime().drop(keys.PepperState)  # as another process would
    assert keys.pepper() == generated
