import pytest

from laion5b_spark.extract.language import LanguageDetector
from laion5b_spark.extract.text import clean_caption


@pytest.mark.parametrize("raw,html,expected", [
    ("Tom &amp; Jerry", True, "Tom & Jerry"),
    ("Tom &amp; Jerry", False, "Tom &amp; Jerry"),  # WARC attributes arrive decoded: never decode twice
    ("  a\n\t red   sofa\u00a0 ", False, "a red sofa"),
    ("CafÃ© au lait", False, "Café au lait"),  # mojibake repaired
    ("Caf\u0065\u0301 noir", False, "Café noir"),  # NFC
    ("bell\x07 and\x00 null", False, "bell and null"),
    ("Красный диван", False, "Красный диван"),
    ("海辺の夕日", False, "海辺の夕日"),
])
def test_clean_caption(raw, html, expected):
    assert clean_caption(raw, raw_html=html, max_chars=4096) == expected


def test_clean_caption_caps_huge_attributes():
    out = clean_caption("word " * 1_000_000, raw_html=False, max_chars=100)
    assert len(out) <= 100


@pytest.mark.parametrize("text,lang", [
    ("A red leather sofa in a bright living room", "en"),
    ("Vue sur la mer depuis la terrasse de l'hôtel", "fr"),
    ("Красный диван в светлой гостиной", "ru"),
    ("海辺の夕日と白い灯台の風景", "ja"),
    ("Ein rotes Sofa im hellen Wohnzimmer", "de"),
])
def test_language(text, lang):
    code, share = LanguageDetector()(text)
    assert code == lang and 0.7 <= share <= 1.0


@pytest.mark.parametrize("text", ["IMG_2034.jpg", "DSC00123", "12345", "...", "\ud800 broken", "a\x01b\ufffe"])
def test_language_unreliable_is_nolang_and_never_raises(text):
    code, _ = LanguageDetector()(text)
    assert code == "nolang"


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=60), st.booleans())
def test_clean_caption_properties(s, raw):
    out = clean_caption(s, raw_html=raw, max_chars=50)
    assert out == out.strip() and "  " not in out
    assert not any(ch.isspace() and ch != " " for ch in out)
    assert not any(ord(ch) < 32 or 127 <= ord(ch) < 160 for ch in out)
    assert len(out) <= 50 or (raw and "&" in s)  # entities may only shrink... or expand (&#x..; -> chars)
    assert clean_caption(out, raw_html=False, max_chars=50) == out  # a clean caption stays as it is


# -- HTML5 attribute values (issue 16, class 1) and mojibake before control removal (class 7) -------------------

@pytest.mark.parametrize("raw,expected", [
    ("img.php?id=7&param=2", "img.php?id=7&param=2"),  # legacy &para followed by an alphanumeric: not a reference
    ("&times=4&not=5&reg=6", "&times=4&not=5&reg=6"),  # ... or by '='
    ("a=1&amp;region=eu", "a=1&region=eu"),
    ("&copy 2020", "© 2020"),  # legacy entity without ';' before a space is one
    ("&copy;2020", "©2020"),
    ("&notit;", "&notit;"),  # longest match is legacy 'not', followed by 'i'
    ("&not.", "¬."),
    ("&notin;", "∉"),
    ("&AMP;&LT&gt", "&<>"),
    ("&ampx &amp= &amp", "&ampx &amp= &"),
    ("&bogus; &", "&bogus; &"),
    ("&#x3D;&#61;&#X41", "==A"),
    ("&#128;&#x9F;&#x81;", "€Ÿ\x81"),  # the replacement table; 0x81 has no entry and stays
    ("&#0;&#xD800;&#x110000;&#99999999999999999999999;", "\ufffd" * 4),
    ("&#1;&#13;&#xFFFE;", "\x01\r\ufffe"),  # controls and noncharacters are kept (only a parse error)
    ("&#;&#x;&#xg", "&#;&#x;&#xg"),
    ("a\x00b\r\nc\rd", "a\ufffdb\nc\nd"),  # the tokenizer's NUL and the input stream's newlines
])
def test_attribute_decoder_follows_html5(raw, expected):
    from laion5b_spark.extract.text import decode_attribute

    assert decode_attribute(raw) == expected


_ATTR_PIECES = ["&", "amp", "amp;", "&amp;", "&#", "x", "X", "3D", "3d;", ";", "=", "not", "notin", "it", "copy",
                "reg", "times", "#0", "#128", "#x81", "#xD800;", "#1114112", "#99999999999", "AMP", "lt", "a", "1",
                " ", "\x00", "\r\n", "\r", "é", "&#x", "&#X41", "para", "param", "&nbsp", "frac34", "&frac34"]


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(_ATTR_PIECES), max_size=12).map("".join))
def test_attribute_decoder_equals_a_browser_engine(raw):
    # lexbor (the WARC route's parser) implements the WHATWG tokenizer: our decoder must read WAT text as it does
    from selectolax.lexbor import LexborHTMLParser

    from laion5b_spark.extract.text import decode_attribute

    node = LexborHTMLParser(f'<img alt="{raw}">').css_first("img")
    assert decode_attribute(raw) == node.attributes["alt"]


def test_raw_wat_alt_uses_the_attribute_rules():
    assert clean_caption("id=7&param=2 &times=4 AT&amp;T", raw_html=True, max_chars=4096) == \
        "id=7&param=2 &times=4 AT&T"


@pytest.mark.parametrize("raw,html,expected", [
    ("2ee84a1a1f307328.gif (460Ã\x97155)", False, "2ee84a1a1f307328.gif (460×155)"),  # C3 97 read as Latin-1
    ("2ee84a1a1f307328.gif (460&Atilde;\x97155)", True, "2ee84a1a1f307328.gif (460×155)"),  # the raw WAT text
    ("VoilÃ\xa0 le cafÃ©", False, "Voilà le café"),  # C3 A0: the no-break space is part of the mojibake
])
def test_mojibake_is_repaired_before_controls_and_spaces_are_cleaned(raw, html, expected):
    assert clean_caption(raw, raw_html=html, max_chars=4096) == expected


def test_real_cc_page_mojibake_repaired():
    # 044545.com's page says alt="2ee84a1a1f307328.gif (460&Atilde;\xc2\x97155)" (UTF-8): meant is 460×155
    from conftest import shared_sample

    from laion5b_spark.accounting import ErrorSamples
    from laion5b_spark.config import load_config
    from laion5b_spark.extract.settings import ExtractSettings
    from laion5b_spark.extract.unit import extract_unit
    from laion5b_spark.job import Unit, UnitContext

    path = str(shared_sample("cc-excerpt.warc.gz"))
    settings_ = ExtractSettings.from_config(load_config(None, ["extract.language_detection=false"]))
    r = extract_unit(Unit(key=path, source=path), UnitContext(None, settings_, ErrorSamples()))
    texts = {row["url"]: row["text"] for row in r.rows.to_pylist()
             if row["page_url"] == "http://044545.com/topic/20200207/015849.html"}
    assert texts["https://cdnimg.acgget.com/images/202002/2ee84a1a1f307328.gif"] == "2ee84a1a1f307328.gif (460×155)"
    assert texts["https://cdnimg.acgget.com/images/202003/98a8e084f2bc4be1.jpg"] == "98a8e084f2bc4be1.jpg (781×451)"


# -- review 16, finding 10: a control character is a space whether or not ftfy ran on the caption ---------------

@pytest.mark.parametrize("with_mojibake,plain", [
    ("foo\x01bar Ã©té", "foo\x01bar été"),  # ftfy runs on the first only (its badness test)
    ("foo\x7fbar Ã©té", "foo\x7fbar été"),
    ("cafÃ©\x01x", "café\x01x"),
    ("Ã\x97 x\x1fy", "× x\x1fy"),
])
def test_controls_are_spaces_with_and_without_mojibake(with_mojibake, plain):
    fixed = clean_caption(with_mojibake, raw_html=False, max_chars=4096)
    assert fixed == clean_caption(plain, raw_html=False, max_chars=4096)
    assert " " in fixed and not any(ord(c) < 32 or c == "\x7f" for c in fixed)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="ab é", max_size=8), st.sampled_from(["\x01", "\x08", "\x0b", "\x1f", "\x7f"]),
       st.text(alphabet="ab é", max_size=8))
def test_a_control_between_words_separates_them_whatever_else_the_caption_holds(left, control, right):
    for mojibake in ("", " Ã©"):  # a second caption that ftfy repairs
        out = clean_caption("x" + left + control + right + "y" + mojibake, raw_html=False, max_chars=4096)
        words = ("x" + left).split() + (right + "y").split()
        assert out.split()[:len(words)] == words, (out, words)


# -- review 16, finding 11: the docstring's examples are what decode_attribute does ----------------------------

def test_decode_attribute_docstring_examples_hold():
    import doctest

    from laion5b_spark.extract import text

    runner = doctest.DocTestRunner()
    for test in doctest.DocTestFinder().find(text.decode_attribute, globs={"decode_attribute": text.decode_attribute}):
        runner.run(test)
    assert runner.tries >= 2 and runner.failures == 0
    # in an attribute a legacy name followed by an alphanumeric stays as written (in text: "¬it;")
    assert text.decode_attribute("&notit;") == "&notit;"
