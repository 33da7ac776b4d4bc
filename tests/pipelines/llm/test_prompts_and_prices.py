"""The prompt library of the LLM layer (loading, validation, rendering, refs) and the price
table (prefix matching, costs, bad files)."""

from __future__ import annotations

import re
import string
import textwrap

import pytest
import yaml

from pipelines.llm.prices import load_prices
from prompts.llm_prompts import IMAGE_KINDS, REQUIRED, PromptTemplate, load_prompts

# --------------------------------------------------------------------------------------------
# Prompts


def _placeholders(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}


def test_bundled_library_loads_and_is_consistent():
    library = load_prompts()
    assert set(REQUIRED) <= set(library.templates)
    assert library.version >= 1
    ids = [t.id for t in library.templates.values()]
    assert len(set(ids)) == len(ids)
    for key, template in library.templates.items():
        assert template.key == key
        assert re.fullmatch(r"[a-z_]+@v\d+", template.id)
        assert _placeholders(template.user) == set(template.fields), key
        assert len(template.fields) == len(set(template.fields)), key
        assert _placeholders(template.system) == set(), key
        assert set(template.images) <= set(IMAGE_KINDS) and template.images, key
        ref = template.ref
        assert ref.id == template.id and re.fullmatch(r"[0-9a-f]{12}", ref.version)
    assert library.refs() == [t.ref for t in library.templates.values()]


def test_render_fills_every_field_and_refuses_missing_or_extra():
    library = load_prompts()
    for template in library.templates.values():
        values = {name: f"<{name.upper()}>" for name in template.fields}
        system, user = template.render(**values)
        assert system == template.system.strip()
        for value in values.values():
            assert value in user
        assert "{{" not in user and "}}" not in user
        assert user == user.strip()
        missing = dict(values)
        dropped = missing.pop(template.fields[0])
        assert dropped
        with pytest.raises(ValueError, match=re.escape(template.id)):
            template.render(**missing)
        with pytest.raises(ValueError, match="unknown"):
            template.render(**values, surplus="x")
    # The JSON examples in the user texts come out with single braces.
    _, user = library["rating"].render(category="c", flagged="f", evidence="e", texts="t")
    assert '{"label_accuracy": 0,' in user and "{{" not in user


def test_render_keeps_braces_in_field_values():
    template = load_prompts()["parent_aggregation"]
    _, user = template.render(concept="{nose}", path="a > b", parts="- {0} {x}")
    assert "{nose}" in user and "- {0} {x}" in user


VALID = {
    "concept_explanation": {"id": "c@v1", "images": ["real_outlined", "fake_outlined"], "fields": ["concept"],
                            "system": "You are an analyst.", "user": "Explain the {concept}."},
    "parent_aggregation": {"id": "p@v1", "images": ["fake"], "fields": ["parts"],
                           "system": "You merge.", "user": "Merge:\n{parts}"},
    "image_aggregation": {"id": "i@v1", "images": ["fake"], "fields": ["parts"],
                          "system": "You summarise.", "user": "Summarise:\n{parts} as {{\"explanation\": \"...\"}}"},
    "rating": {"id": "r@v1", "images": ["real", "fake"], "fields": ["texts", "evidence"],
               "system": "You rate.", "user": "Rate {texts} against {evidence}."},
}


def _write(tmp_path, templates: dict, name: str = "prompts.yaml", **top) -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump({"version": 3, **top, "templates": templates}, sort_keys=False))
    return str(path)


def _with(key: str, **changes) -> dict:
    templates = {k: dict(v) for k, v in VALID.items()}
    templates[key].update(changes)
    for name, value in list(changes.items()):
        if value is None:
            del templates[key][name]
    return templates


def test_a_valid_custom_file_loads(tmp_path):
    library = load_prompts(_write(tmp_path, VALID))
    assert library.version == 3 and set(library.templates) == set(VALID)
    assert library["rating"].fields == ("texts", "evidence")
    assert library["concept_explanation"].images == ("real_outlined", "fake_outlined")


@pytest.mark.parametrize(("key", "changes", "message"), [
    ("rating", {"id": None}, "needs id"),
    ("rating", {"system": None}, "needs id, system, user and fields"),
    ("parent_aggregation", {"user": None}, "needs id"),
    ("image_aggregation", {"fields": None}, "needs id"),
    ("concept_explanation", {"images": ["real", "blurred"]}, "unknown image kinds"),
    ("rating", {"system": "You rate {texts}."}, "system text takes no fields"),
    ("rating", {"system": "Answer like {\"overall\": 1}."}, "system text takes no fields"),
    ("parent_aggregation", {"user": "Merge {parts} in {concept}."}, "uses"),  # a placeholder not listed
    ("parent_aggregation", {"fields": ["parts", "concept"]}, "uses"),  # a field not used
    ("image_aggregation", {"user": "Summarise {parts} and {}."}, "uses"),  # a positional placeholder
])
def test_a_malformed_file_names_the_template(tmp_path, key, changes, message):
    path = _write(tmp_path, _with(key, **changes))
    with pytest.raises(ValueError, match=re.escape(message)) as info:
        load_prompts(path)
    assert f"templates.{key}" in str(info.value)


@pytest.mark.parametrize("text", ["", "version: 1\n", "templates: [a, b]\n", "- just\n- a list\n"])
def test_a_file_without_a_templates_mapping_is_refused(tmp_path, text):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match="templates"):
        load_prompts(str(path))


def test_a_file_lacking_a_required_template_is_refused(tmp_path):
    templates = {k: v for k, v in VALID.items() if k != "rating"}
    with pytest.raises(ValueError, match="lacks templates.*rating"):
        load_prompts(_write(tmp_path, templates))


def test_a_template_that_is_not_a_mapping_is_refused(tmp_path):
    with pytest.raises(ValueError, match="templates.rating"):
        load_prompts(_write(tmp_path, {**VALID, "rating": "Rate it."}))


def _template(**changes) -> PromptTemplate:
    base = {"key": "k", "id": "k@v1", "system": "You are an analyst.", "user": "Explain {concept}.",
                "fields": ("concept",), "images": ("fake",)}
    return PromptTemplate(**{**base, **changes})


def test_ref_changes_with_the_text_only():
    ref = _template().ref
    assert ref.id == "k@v1" and re.fullmatch(r"[0-9a-f]{12}", ref.version)
    assert _template().ref == ref  # stable
    assert _template(system="You are an analyst!").ref.version != ref.version
    assert _template(user="Explain the {concept}.").ref.version != ref.version
    assert _template(user="Explain {concept}. ").ref.version != ref.version  # whitespace is text too
    # The separator keeps text from moving between system and user unnoticed.
    assert _template(system="A", user="B{concept}").ref != _template(system="AB", user="{concept}").ref
    assert _template(id="k@v2").ref == ref.model_copy(update={"id": "k@v2"})


def test_ref_of_a_loaded_file_follows_its_text(tmp_path):
    first = load_prompts(_write(tmp_path, VALID, "a.yaml"))
    edited = load_prompts(_write(tmp_path, _with("rating", user="Rate {texts}, given {evidence}."), "b.yaml"))
    assert first["rating"].ref.version != edited["rating"].ref.version
    assert first["parent_aggregation"].ref == edited["parent_aggregation"].ref
    # The bundled file's refs are what a run records: the same on every load.
    assert [r.version for r in load_prompts().refs()] == [
        t.ref.version for t in load_prompts(None).templates.values()]


# --------------------------------------------------------------------------------------------
# Prices


@pytest.mark.parametrize(("model", "entry"), [
    ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
    ("gpt-4o-mini", "gpt-4o-mini"),
    ("gpt-4o-2024-08-06", "gpt-4o"),
    ("gpt-4o", "gpt-4o"),
    ("gpt-4.1-nano-2025-04-14", "gpt-4.1-nano"),
    ("gpt-5-mini", "gpt-5-mini"),
    ("gpt-5-2025-08-07", "gpt-5"),
    ("models/gemini-2.5-flash", "gemini-2.5-flash"),
    ("publishers/google/models/gemini-2.5-flash-lite", "gemini-2.5-flash-lite"),
    ("gemini-2.5-flash-preview-05-20", "gemini-2.5-flash"),
    ("gemini-2.5-flash-lite-preview-06-17", "gemini-2.5-flash-lite"),
    ("gemini-2.0-flash-001", "gemini-2.0-flash"),
])
def test_longest_prefix_match(model, entry):
    prices = load_prices()
    price = prices.price(model)
    assert price is not None and price.model == entry
    assert price == prices.models[entry]


@pytest.mark.parametrize("model", [None, "", "m", "gpt-4", "gpt-4omni", "gpt-4o_mini", "claude-3-haiku",
                                   "llama-3-gpt-4o", "gemini-2.5"])
def test_unknown_model_has_no_price_and_no_cost(model):
    prices = load_prices()
    assert prices.price(model) is None
    assert prices.cost(model, 1000, 1000) is None
    assert prices.cost(model, 1000, 1000, batch=True) is None


def test_costs_and_batch_discount():
    prices = load_prices()
    assert prices.batch_discount == 0.5 and prices.as_of
    price = prices.models["gpt-4o-mini"]
    assert (price.input_per_m, price.output_per_m) == (0.15, 0.60)
    cost = prices.cost("gpt-4o-mini-2024-07-18", 2_000_000, 500_000)
    assert cost == pytest.approx(2 * 0.15 + 0.5 * 0.60)
    assert prices.cost("gpt-4o-mini-2024-07-18", 2_000_000, 500_000, batch=True) == pytest.approx(cost / 2)
    assert prices.cost("models/gemini-2.5-flash", 1_000_000, 0) == pytest.approx(0.30)
    assert prices.cost("gemini-2.5-flash", 0, 0) == 0.0
    for entry in prices.models.values():
        assert 0 < entry.input_per_m <= entry.output_per_m


def test_a_custom_price_file(tmp_path):
    path = tmp_path / "prices.yaml"
    path.write_text(textwrap.dedent("""
        as_of: "2030-01"
        models:
          local-model: {input: 1, output: 2}
          local-model-big: {input: "3.5", output: 7}
    """))
    prices = load_prices(str(path))
    assert prices.as_of == "2030-01" and prices.batch_discount == 1.0  # no discount unless stated
    assert prices.price("local-model-big-v2").model == "local-model-big"
    assert prices.cost("local-model", 1e6, 1e6, batch=True) == pytest.approx(3.0)


@pytest.mark.parametrize("text", [
    "models:\n  m: {input: 1}\n",  # no output
    "models:\n  m: {output: 1}\n",  # no input
    "models:\n  m: {input: cheap, output: 1}\n",  # not a number
    "models:\n  m: 1.5\n",  # not a mapping
    "as_of: x\n",  # no models
    "",  # empty file
    "models:\n  - m\n",  # models as a list
    "models: {m: {input: 1, output: 2}}\nbatch_discount: half\n",
])
def test_a_bad_price_file_raises_value_error(tmp_path, text):
    path = tmp_path / "prices.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match="price table"):
        load_prices(str(path))
