"""Field checks: safe ids, URL normalization, source keys."""

from __future__ import annotations

from pathlib import PurePosixPath

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sldata.annotations.fields import FieldError, normalize_url, safe_id, source_key, youtube_id
from sldata.annotations.rejects import Reason


@pytest.mark.parametrize(
    "hostile",
    ["../x", "../../etc/passwd", "a/b", "a\\b", "..", ".", ".hidden", "", "x" * 65, "id\x00", "id\n", "é", "-rf", "a b"],
)
def test_safe_id_refuses_path_like_ids(hostile: str) -> None:
    with pytest.raises(FieldError) as err:
        safe_id(hostile, "video_id")
    assert err.value.reason is Reason.UNSAFE_ID
    assert err.value.field == "video_id"


def test_safe_id_accepts_real_ids() -> None:
    assert safe_id("00335", "video_id") == "00335"
    assert safe_id(69241, "video_id") == "69241"


@given(st.text(max_size=80))
def test_accepted_ids_are_plain_file_names(text: str) -> None:
    try:
        name = safe_id(text, "id")
    except FieldError:
        return
    assert PurePosixPath(name).name == name and name not in (".", "..") and "/" not in name and "\\" not in name


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("file:///etc/passwd", Reason.UNSUPPORTED_URL_SCHEME),
        ("ftp://example.org/v.mp4", Reason.UNSUPPORTED_URL_SCHEME),
        ("javascript:alert(1)", Reason.UNSUPPORTED_URL_SCHEME),
        ("$(rm -rf ~)", Reason.MALFORMED_URL),
        ("http://x.org/a.mp4; rm -rf /", Reason.MALFORMED_URL),
        ("`touch /tmp/pwned`", Reason.MALFORMED_URL),
        ("https://", Reason.MALFORMED_URL),
        ("", Reason.MISSING_FIELD),
    ],
)
def test_hostile_urls_are_refused(url: str, reason: Reason) -> None:
    with pytest.raises(FieldError) as err:
        normalize_url(url)
    assert err.value.reason is reason


def test_scheme_less_youtube_links_get_https() -> None:
    assert normalize_url("www.youtube.com/watch?v=7y5Ye-2-ZBs") == "https://www.youtube.com/watch?v=7y5Ye-2-ZBs"


@pytest.mark.parametrize(
    "url",
    [
        "https://www.youtube.com/watch?v=ri3NrdgfAtE",
        "https://youtube.com/watch?v=ri3NrdgfAtE&t=12",
        "https://youtu.be/ri3NrdgfAtE",
        "https://www.youtube.com/embed/ri3NrdgfAtE",
        "https://m.youtube.com/watch?feature=share&v=ri3NrdgfAtE",
    ],
)
def test_every_youtube_link_form_maps_to_one_source(url: str) -> None:
    assert youtube_id(url) == "ri3NrdgfAtE"
    assert source_key(url) == "youtube-ri3NrdgfAtE"


def test_other_urls_get_a_hash_key() -> None:
    key = source_key("http://aslbricks.org/New/ASL-Videos/book.mp4")
    assert key.startswith("url-") and len(key) == 20
    assert key == source_key("http://aslbricks.org/New/ASL-Videos/book.mp4")
    assert key != source_key("http://aslbricks.org/New/ASL-Videos/books.mp4")
