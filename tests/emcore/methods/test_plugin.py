"""A method is one registry entry.

A toy method, registered here with one ``register(Method(...))`` (through
:func:`emcore.methods.registry.registered`, which takes it out again) and nothing else edited,
shows up on the Denoise page, in ``python -m emcore methods``, in the CLI's ``denoise`` and on
the Learn page. Then one contract over every registered method's app/CLI/Learn fields.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import ndimage

from emcore import Dataset
from emcore.cli import main
from emcore.evaluate.filter_view import supported_text
from emcore.methods.lesson import Lesson, LessonFigure, image_row
from emcore.methods.registry import FilterViewSpec, Method, Param, denoise, get_method, methods, registered

BUILT_IN = [m.name for m in methods()]  # collected before the toy is registered


def _run_toy(ds, params, ctx):
    # ``strength`` comes from the preset unless given (None): record the value used.
    strength = params["strength"] if params["strength"] is not None else STRENGTH[params["preset"]]
    ctx.resolved["strength"] = strength
    smooth = ndimage.uniform_filter(ds.data, size=params["size"], axes=(-2, -1))
    return (1 - strength) * ds.data + strength * smooth


STRENGTH = {"mild": 0.5, "strong": 1.0}
TOY_LESSON = Lesson(
    assumes="Toy lesson: the image is smooth on the scale of the box.",
    needs="Nothing at all.", choose_when="Never; it is a test.", parameters="**Box size**.",
    reference="A test module, 2025.", caption="The toy's example: noise and its box average.",
    figure=lambda: image_row([("Toy noise", np.eye(8, dtype=np.float32)),
                              ("Toy average", ndimage.uniform_filter(np.eye(8, dtype=np.float32), 3))]),
)
TOY = Method(
    name="toybox",
    label="Toy box filter",
    description="A box filter blended with the input: registered by a test, to show one entry is enough.",
    kind="classical",
    accepts=("image", "stack"),
    params=(
        Param("preset", "choice", "mild", "How hard to smooth.", choices=tuple(STRENGTH)),
        Param("size", "int", 3, "Side of the box (px).", min=1, max=15),
        Param("strength", "float", None, "Blend of box and input (preset: mild 0.5, strong 1).", min=0.0, max=1.0,
              preset=True, group="advanced"),
    ),
    run=_run_toy,
    # 30 s per box pixel: the default 3×3 box "takes" 4.5 min, so the page warns.
    estimate_seconds=lambda shape, kind, p: 30.0 * p["size"] ** 2,
    lesson=TOY_LESSON,
    preset_values=lambda v: {"strength": STRENGTH[v["preset"]]},
    cost_hint="Use a smaller box.",
)


@pytest.fixture
def toy():
    with registered(TOY):
        yield TOY
    assert "toybox" not in [m.name for m in methods()]


def test_toy_runs_through_the_registry(toy):
    img = np.random.default_rng(0).random((16, 16)).astype(np.float32)
    res = denoise(Dataset(img, "image", name="toy data"), "toybox", size=5)
    assert res.params == {"preset": "mild", "size": 5, "strength": 0.5}
    np.testing.assert_allclose(res.data, 0.5 * img + 0.5 * ndimage.uniform_filter(img, 5), rtol=1e-6)
    assert toy.estimate((16, 16), "image", {"size": 1}) == 30.0


def test_toy_is_listed_by_the_cli(toy, capsys):
    assert main(["methods", "--json"]) == 0
    listed = {m["name"]: m for m in json.loads(capsys.readouterr().out)}
    assert listed["toybox"]["label"] == "Toy box filter" and listed["toybox"]["lesson"] is True
    assert [p["name"] for p in listed["toybox"]["params"]] == ["preset", "size", "strength"]
    assert main(["methods"]) == 0
    text = capsys.readouterr().out
    assert "--set size=<int> (default 3) [1 .. 15]" in text and "--set strength=<float> (default preset)" in text


def test_toy_denoises_from_the_cli(toy, tmp_path, capsys):
    src, out = tmp_path / "noisy.npy", tmp_path / "clean.npy"
    img = np.random.default_rng(1).random((20, 24)).astype(np.float32)
    np.save(src, img)
    assert main(["denoise", str(src), "--method", "toybox", "--out", str(out), "--set", "size=3",
                 "--set", "preset=strong"]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["method"] == "toybox" and line["params"] == {"preset": "strong", "size": 3, "strength": 1.0}
    np.testing.assert_allclose(np.load(out), ndimage.uniform_filter(img, 3), rtol=1e-6)
    assert main(["denoise", str(src), "--method", "toybox", "--out", str(out), "--set", "size=99"]) == 2
    assert "between 1 and 15" in capsys.readouterr().err


def test_toy_on_the_denoise_page(toy):
    from tests.app.apptest import open_app

    at = open_app()
    at.switch_page("pages/denoise.py").run()
    assert "Toy box filter (classical)" in at.selectbox(key="method_choice").options
    at.selectbox(key="method_choice").set_value("toybox").run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("Toy box filter" in m.value for m in at.markdown)
    # The preset's value is shown, and follows the preset.
    assert at.number_input(key="p_toybox_strength").value == 0.5
    at.selectbox(key="p_toybox_preset").set_value("strong").run()
    assert at.number_input(key="p_toybox_strength").value == 1.0
    # The generic cost warning, next to the Run button, with the method's hint.
    assert any("Toy box filter on this data will take about 4 min" in w.value and "Use a smaller box." in w.value
               for w in at.warning)
    at.number_input(key="p_toybox_size").set_value(1).run()
    assert not any("Toy box filter" in w.value for w in at.warning)
    next(b for b in at.button if b.label == "Run").click().run()
    results = _results_after_jobs(at)
    assert not at.exception and not at.error, [e.value for e in at.error]
    (res,) = results
    assert res["method"] == "toybox" and res["params"] == {"preset": "strong", "size": 1, "strength": 1.0}
    assert res["requested"]["strength"] is None  # "the preset's", as the form showed it


def _results_after_jobs(at, timeout: float = 60.0) -> list:
    """The session's results once its jobs are done (a fast job is collected by the page's own rerun)."""
    import time

    from emcore.jobs import manager

    deadline = time.monotonic() + timeout
    while any(j.active for j in manager().jobs_for(at.session_state["owner_id"])):
        assert time.monotonic() < deadline, "the job did not finish in time"
        time.sleep(0.1)
    at.run()
    return list(at.session_state["results"]) if "results" in at.session_state else []


def test_toy_on_the_learn_page(toy):
    from tests.app.apptest import open_app

    at = open_app()
    at.switch_page("pages/learn.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert sum(e.label.startswith("Toy box filter — classical") for e in at.expander) == 1
    text = " ".join(m.value for m in at.markdown)
    assert "Toy lesson: the image is smooth" in text and "A test module, 2025." in text
    assert any("Toy average" in c.proto.spec for c in at.get("plotly_chart"))
    assert "The toy's example" in " ".join(c.value for c in at.caption)


# -- the contract of every registered method -------------------------------------------
SHAPES = {"image": (64, 48), "stack": (3, 40, 40), "cube": (24, 20, 48)}


@pytest.mark.parametrize("name", BUILT_IN)
def test_lesson_estimate_and_filter_view_are_declared(name):
    m = get_method(name)
    lesson = m.lesson
    assert lesson is not None, f"{name} has no lesson for the Learn page"
    for text in (lesson.assumes, lesson.needs, lesson.choose_when, lesson.parameters, lesson.reference):
        assert text.strip()
    assert lesson.figure is None or lesson.caption, "a figure needs its caption"
    for kind in m.accepts:
        secs = m.estimate(SHAPES[kind], kind)
        assert secs is None or (isinstance(secs, float) and math.isfinite(secs) and secs >= 0), (kind, secs)
    # The filter view follows a network: a method with a spec uses torch, and every network
    # method leaves its network for the view (test_registry.test_contract checks the artifacts).
    assert (m.filter_view is not None) == m.uses_torch
    if m.filter_view is not None:
        assert (m.filter_view.label or m.label) in supported_text()


@pytest.mark.parametrize("name", BUILT_IN)
def test_parameter_declarations_are_consistent(name):
    m = get_method(name)
    names = [p.name for p in m.params]
    assert len(set(names)) == len(names)
    presets = m.from_preset(m.defaults())
    for p in m.params:
        if p.preset:
            assert p.default is None and p.name in presets, f"{name}.{p.name}: None means the preset's value"
            assert presets[p.name] is None or p.coerce(presets[p.name], name) == presets[p.name]
        for other, allowed in p.when:
            assert set(allowed) <= set(m.param(other).choices), (p.name, other)
        assert set(p.choice_labels) <= set(p.choices) and set(p.choice_kinds) <= set(p.choices)
        assert not p.required or p.when, f"{name}.{p.name} is required only under some choice"
        assert p.group in ("", "training", "advanced")


@pytest.mark.parametrize("name", [n for n in BUILT_IN if get_method(n).lesson.figure is not None])
def test_lesson_figures_build(name):
    fig = get_method(name).lesson.figure()
    assert isinstance(fig, LessonFigure) and fig.panels
    for p in fig.panels:
        assert p.title and (p.image is not None or p.curves)
        assert p.image is None or p.image.ndim == 2


def test_filter_view_labels_come_from_the_registry():
    spec = FilterViewSpec(label="Toy net", note="The toy net's note.")
    net = Method(name="toynet", label="A toy network", description="d", kind="self-supervised", accepts=("image",),
                 params=(), run=lambda ds, p, ctx: ds.data, uses_torch=True, filter_view=spec)
    with registered(net):
        assert supported_text().endswith(" and Toy net")
    assert "Toy net" not in supported_text()


def test_the_preset_value_given_or_left_to_the_preset_is_the_same_run():
    """None ("the preset's") and the preset's own value give the bit-identical result."""
    img = np.random.default_rng(2).poisson(5.0, (40, 40)).astype(np.float32)
    ds = Dataset(img, "image", name="preset check")
    quick = {"steps": 2, "batch_size": 2, "patch_size": 32}
    left = denoise(ds, "noise2sr", seed=1, **quick)
    given = denoise(ds, "noise2sr", seed=1, mmse_samples=get_method("noise2sr").from_preset({})["mmse_samples"],
                    **quick)
    np.testing.assert_array_equal(left.data, given.data)
    assert left.params["mmse_samples"] == given.params["mmse_samples"] == 50
