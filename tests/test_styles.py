import json

import pytest

from app.core.styles import DEFAULT_STYLES_PATH, NONE, Style, StyleError, find_style, load_styles, read_styles


@pytest.fixture(scope="module")
def shipped():
    return load_styles()


def write_styles(tmp_path, content) -> str:
    path = tmp_path / "styles.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content), encoding="utf-8")
    return str(path)


def test_shipped_file_is_found_relative_to_the_package():
    assert DEFAULT_STYLES_PATH.is_file()
    assert DEFAULT_STYLES_PATH.parent.name == "resources"


def test_shipped_styles(shipped):
    assert shipped[0] == Style("None", "{prompt}", "")
    assert len(shipped) - 1 >= 12
    names = [style.name.casefold() for style in shipped]
    assert len(set(names)) == len(names)
    for style in shipped:
        assert style.prompt.count("{prompt}") == 1, style.name
        assert style.name == style.name.strip() and style.name
        positive, negative = style.apply("a red fox in the snow", "")
        assert "a red fox in the snow" in positive
        assert ", ," not in positive and ",," not in positive
        assert negative == style.negative_prompt


def test_shipped_styles_have_negatives_and_distinct_templates(shipped):
    styled = shipped[1:]
    assert all(style.negative_prompt for style in styled)
    assert len({style.prompt for style in styled}) == len(styled)
    for expected in ("Photographic", "Cinematic", "Anime", "Watercolor", "Pixel Art", "Line Art"):
        assert find_style(shipped, expected).name == expected


@pytest.mark.parametrize("template, prompt, negative, style_negative, expected", [
    ("{prompt}", "a cat", "", "", ("a cat", "")),
    ("{prompt}", "", "", "", ("", "")),
    ("{prompt}, oil painting", "a cat", "", "photo", ("a cat, oil painting", "photo")),
    ("{prompt}, oil painting", "", "", "photo", ("oil painting", "photo")),
    ("{prompt}, oil painting", "   ", "blurry", "photo", ("oil painting", "photo, blurry")),
    ("cinematic still, {prompt}, film grain", "", "", "", ("cinematic still, film grain", "")),
    ("cinematic still, {prompt}, film grain", "a ship", "", "", ("cinematic still, a ship, film grain", "")),
    ("art of {prompt}", "", "", "", ("art of", "")),
    ("{prompt} . dramatic, moody", "", "", "", ("dramatic, moody", "")),
    ("{prompt} . dramatic, moody", "a tower", "", "", ("a tower. dramatic, moody", "")),
    ("{prompt},  detailed ", " a cat, , on a mat ,", "", "", ("a cat, on a mat, detailed", "")),
    ("{prompt}", "line one\n  line two", "", "", ("line one line two", "")),
    ("{prompt}, sketch", "a cat", "  ugly ,", "color, ", ("a cat, sketch", "color, ugly")),
    ("{prompt}, sketch", "a cat", "ugly", "", ("a cat, sketch", "ugly")),
    ("{prompt}, sketch", "(a cat:1.2), {prompt}", "", "", ("(a cat:1.2), {prompt}, sketch", "")),
    ("{prompt}, pixel art", "a fox", "", "blurry, smooth", ("a fox, pixel art", "blurry, smooth")),
])
def test_apply(template, prompt, negative, style_negative, expected):
    assert Style("S", template, style_negative).apply(prompt, negative) == expected


def test_find_style_is_case_insensitive(shipped):
    assert find_style(shipped, "cinematic").name == "Cinematic"
    assert find_style(shipped, "  PIXEL ART ").name == "Pixel Art"
    assert find_style(shipped, "none") is shipped[0]


def test_unknown_style_lists_choices():
    styles = [Style("None", "{prompt}", ""), Style("Anime", "{prompt}, anime", "photo")]
    with pytest.raises(StyleError) as error:
        find_style(styles, "Vaporwave")
    assert str(error.value) == "unknown style 'Vaporwave'; choose one of: None, Anime"


def test_optional_settings_are_read(tmp_path):
    path = write_styles(tmp_path, [
        {"name": "None", "prompt": "{prompt}", "negative_prompt": ""},
        {"name": "Fast", "prompt": "{prompt}, quick", "sampler": "Euler a", "steps": 12, "guidance": 4},
    ])
    fast = load_styles(path)[1]
    assert (fast.negative_prompt, fast.sampler, fast.steps, fast.guidance) == ("", "Euler a", 12, 4.0)
    assert isinstance(fast.guidance, float)


@pytest.mark.parametrize("content, problem", [
    ('[{"name": "A", "prompt": "{prompt}"},', "not valid JSON"),
    ("", "not valid JSON"),
    ({"name": "A", "prompt": "{prompt}"}, "expected a JSON list of styles"),
    ([], "the list of styles is empty"),
    (["None"], "entry 1 is not an object"),
    ([{"prompt": "{prompt}"}], "entry 1 has no name"),
    ([{"name": "None", "prompt": "{prompt}"}, {"name": " ", "prompt": "{prompt}"}], "entry 2 has no name"),
    ([{"name": "Oil"}], "style 'Oil' has no prompt"),
    ([{"name": "Oil", "prompt": 3}], "style 'Oil' has no prompt"),
    ([{"name": "Oil", "prompt": "oil painting"}], "style 'Oil': the prompt template has no {prompt}"),
    ([{"name": "Oil", "prompt": "{prompt}"}, {"name": "oil", "prompt": "{prompt}, x"}],
     "duplicate style name 'oil'"),
    ([{"name": "Oil", "prompt": "{prompt}", "negative": "photo"}], "style 'Oil' has unknown key 'negative'"),
    ([{"name": "Oil", "prompt": "{prompt}", "negative_prompt": ["photo"]}], "negative_prompt must be text"),
    ([{"name": "Oil", "prompt": "{prompt}", "steps": 0}], "steps must be a whole number"),
    ([{"name": "Oil", "prompt": "{prompt}", "steps": 2.5}], "steps must be a whole number"),
    ([{"name": "Oil", "prompt": "{prompt}", "guidance": -1}], "guidance must be a number above 0"),
    ([{"name": "Oil", "prompt": "{prompt}", "guidance": "high"}], "guidance must be a number above 0"),
    ('[{"name": "Oil", "prompt": "{prompt}", "guidance": NaN}]', "guidance must be a number above 0"),
    ([{"name": "Oil", "prompt": "{prompt}", "sampler": 5}], "sampler must be a sampler name"),
    ([{"name": "Oil", "prompt": "{prompt}", "steps": 10**9}], "steps must be a whole number from 1 to 500"),
    ([{"name": "Oil", "prompt": "{prompt}", "guidance": 1e300}], "at most 50"),
    ([{"name": "O" * 1000, "prompt": "{prompt}"}], "entry 1: the name is over 100 characters"),
    ([{"name": "Oil\u001b[2J", "prompt": "{prompt}"}], "entry 1: the name holds control characters"),
    ([{"name": "Oil\rInk", "prompt": "{prompt}"}], "entry 1: the name holds control characters"),
    ([{"name": "Oil", "prompt": "{prompt}", "lora": "~nobody-such-user-here/x.safetensors"}],
     "cannot find the home folder"),
    ([{"name": "Oil", "prompt": "{prompt}", "lora": "a\u0000b.safetensors"}], "lora must be the path"),
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
])
def test_bad_files_give_one_line_errors(tmp_path, content, problem):
    with pytest.raises(StyleError) as error:
        load_styles(write_styles(tmp_path, content))
    text = str(error.value)
    assert text.startswith("styles.json: ")
    assert problem in text
    assert "\n" not in text


def test_missing_and_undecodable_files(tmp_path):
    with pytest.raises(StyleError) as error:
        load_styles(tmp_path / "absent.json")
    assert str(error.value) == "absent.json: no such file"
    (tmp_path / "latin.json").write_bytes(b"[\xff]")
    with pytest.raises(StyleError) as error:
        load_styles(tmp_path / "latin.json")
    assert str(error.value).startswith("latin.json: not valid JSON")


def test_reading_leniently_keeps_the_good_styles_and_names_the_bad(tmp_path):
    path = write_styles(tmp_path, [{"name": "Oil", "prompt": "oil painting of {prompt}"},
                                   {"name": "Broken", "prompt": "no placeholder"},
                                   {"name": "Ink", "prompt": "{prompt}", "steps": -1},
                                   {"name": "oil", "prompt": "{prompt}, again"}])
    found = read_styles(path)
    assert [style.name for style in found.styles] == ["None", "Oil"]      # "None" is always there, first
    assert [s.name for s in read_styles(write_styles(tmp_path, [{"name": "Oil", "prompt": "{prompt}"},
                                                                {"name": "None", "prompt": "{prompt}"}])).styles] \
        == ["None", "Oil"]
    assert found.problems[0] == "styles.json: style 'Broken': the prompt template has no {prompt} (left out)."
    assert found.problems[1] == "2 more styles were left out."


@pytest.mark.parametrize("content", ["{not json", "[]", "{}", "\u0000"])
def test_reading_an_unusable_file_leniently_leaves_none(tmp_path, content):
    found = read_styles(write_styles(tmp_path, content))
    assert found.styles == [NONE]
    [line] = found.problems
    assert line.startswith("styles.json: ") and line.endswith("only the style None is available.")


def test_a_huge_styles_file_is_not_read(tmp_path):
    path = tmp_path / "styles.json"
    with open(path, "wb") as handle:
        handle.truncate(100 << 20)
    assert "too large" in read_styles(path).problems[0]


def test_names_with_joined_emoji_or_direction_marks_are_kept(tmp_path):
    names = ["\U0001f9d1\u200d\U0001f3a8 Artist", "\u05e6\u05d9\u05d5\u05e8\u200f"]
    found = read_styles(write_styles(tmp_path, [{"name": name, "prompt": "{prompt}"} for name in names]))
    assert [style.name for style in found.styles] == ["None", *names] and found.problems == ()
