"""Choosing a model: the registry, ``--model`` resolution, ``dotsocr models``, and what the
launch planner does with a profile's facts (pre-quantized checkpoints, fixed-size inputs)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from dotsocr.errors import ConfigError, UnknownModel
from dotsocr.models import all_profiles, get_profile, profile_for
from dotsocr.models.chat import ChatProfile
from dotsocr.models.resize import image_tokens, smart_resize
from dotsocr.models.serving import DOTS_OCR, GIB
from dotsocr.serve.plan import Card, PlanOptions, plan

H100 = Card("H100", 80 * GIB, None, (9, 0))
L4 = Card("L4", 24 * GIB, None, (8, 9))


def dotsocr(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dotsocr", *args], capture_output=True, text=True, timeout=120
    )


def test_every_profile_is_complete() -> None:
    """Each registered profile can be described: tasks, a default among them, capabilities,
    and launch facts that the planner can fit on some card."""
    profiles = all_profiles()
    assert "dots.ocr" in [p.name for p in profiles]
    for profile in profiles:
        assert profile.default_task in profile.tasks, profile.name
        assert getattr(profile, "capabilities", None) is not None, profile.name
        assert profile.name == get_profile(profile.name).name
        if getattr(profile, "hf_id", ""):
            assert get_profile(profile.hf_id).name == profile.name


def test_model_names_resolve_to_profiles_and_checkpoints(tmp_path) -> None:
    assert profile_for(None)[0].name == "dots.ocr"
    assert profile_for("DOTS.OCR") == (profile_for("dots.ocr")[0], None)  # a name: its own hub id
    profile, served = profile_for("rednote-hilab/dots.ocr")
    assert (profile.name, served) == ("dots.ocr", "rednote-hilab/dots.ocr")

    folder = tmp_path / "weights"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"architectures": ["DotsOCRForCausalLM"]}))
    assert profile_for(str(folder)) == (profile_for("dots.ocr")[0], str(folder))
    # Another hub id is taken for a checkpoint of the default model (a fine-tune, say)...
    assert profile_for("someone/dots-ocr-finetune")[1] == "someone/dots-ocr-finetune"
    # ...but a bare name no profile has is a typo, not a model.
    with pytest.raises(UnknownModel, match=r"Unknown model 'dots\.orc'\. Known: .*dots\.ocr"):
        profile_for("dots.orc")


def test_pre_quantized_checkpoints_resolve_to_their_profile() -> None:
    """A profile's AWQ checkpoint, named by its hub id, plans with that profile's facts."""
    for profile in all_profiles():
        for hub_id in getattr(profile, "quantized", {}).values():
            assert profile_for(hub_id) == (get_profile(profile.name), hub_id)


def test_the_plan_serves_a_4bit_checkpoint_and_says_what_it_saves() -> None:
    options = PlanOptions(quantization="awq", checkpoints=(("awq", "org/model-AWQ"),))
    launch = plan(L4, options, DOTS_OCR)
    assert launch.model == "org/model-AWQ"
    assert launch.value("--quantization") == "awq_marlin"
    (choice,) = [c for c in launch.choices if c.flag == "--quantization"]
    assert "weights 5.7 -> 3.9 GiB, 1.8 GiB saved" in choice.reason
    weights = dict(launch.memory.rows)
    assert weights["weights (AWQ 4-bit decoder)"] == DOTS_OCR.quantized_weight_bytes(4)
    bf16 = plan(L4, PlanOptions(quantization="none"), DOTS_OCR)
    assert launch.memory.kv_tokens > bf16.memory.kv_tokens  # the weights' saving is cache


def test_a_4bit_plan_needs_a_checkpoint() -> None:
    with pytest.raises(ConfigError, match=r"no GPTQ checkpoint of rednote-hilab/dots\.ocr"):
        plan(L4, PlanOptions(quantization="gptq"), DOTS_OCR)


def test_fp8_says_what_it_saves() -> None:
    launch = plan(H100, PlanOptions(quantization="fp8"), DOTS_OCR)
    (choice,) = [c for c in launch.choices if c.flag == "--quantization"]
    assert "weights 5.7 -> 4.5 GiB, 1.2 GiB saved" in choice.reason


def test_a_fixed_size_model_gets_no_pixel_cap() -> None:
    """A model that takes every page at one size costs the same tokens whatever the page:
    no processor pixel cap to set, and the plan's context is sized for that."""
    fixed = dataclasses.replace(DOTS_OCR, max_image_tokens=256, pixel_cap_kwarg=None)
    launch = plan(L4, PlanOptions(), fixed)
    assert launch.value("--mm-processor-kwargs") is None
    assert int(launch.value("--max-model-len")) <= 256 + 512 + 16_384 + 1024


class _NoLayout(ChatProfile):
    """A model that reads text only."""

    def prompt(self, task, geometry=None, box=None):
        self.check_task(task)
        return "Read the page."


def test_the_pipeline_asks_a_text_only_model_for_text(data) -> None:
    """Layout asked of a model without it: its own default task, and a note saying so."""
    import asyncio

    from dotsocr.document import DocumentOptions, open_document
    from dotsocr.engines.base import EngineAnswer
    from dotsocr.pipeline import Pipeline, PipelineOptions

    profile = _NoLayout(name="plain", tasks=("ocr",), default_task="ocr", max_pixels=1_000_000)
    asked: list[str] = []

    class Engine:
        name = "recording"
        reads_pixels = False

        async def infer(self, page, request):
            asked.append(request.messages[-1]["content"][1]["text"])
            return EngineAnswer("Hello page", "stop", None, None, seconds=0.0, attempts=1)

        async def text_tokens(self, prompt):
            return None

        info = None

    with open_document(data / "multi_page.pdf", DocumentOptions(pages="1", dpi=72)) as doc:
        page = next(doc.pages())
    pipeline = Pipeline(Engine(), profile, PipelineOptions(task="layout_all"))
    result = asyncio.run(pipeline.read_page(page))
    assert asked == ["Read the page."]
    assert [c.text for c in result.cells] == ["Hello page"]
    assert "plain has no layout_all task: asked ocr" in result.notes


def test_dotsocr_models_lists_what_each_model_gives() -> None:
    result = dotsocr("models", "--json")
    assert result.returncode == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert set(rows) == {p.name for p in all_profiles()}
    dots = rows["dots.ocr"]
    assert (dots["layout_boxes"], dots["tables"], dots["formulas"]) == (True, "html", True)
    assert dots["weights_gib"] == {"bf16": 5.7, "fp8": 4.5, "4-bit": 3.9}
    assert dots["smallest_card_gib"] == 8
    table = dotsocr("models")
    assert table.returncode == 0 and "rednote-hilab/dots.ocr" in table.stdout


def test_an_unknown_model_for_ocr_is_one_line_naming_the_choices(data) -> None:
    result = dotsocr("ocr", str(data / "multi_page.pdf"), "--model", "gpt-9", "--engine", "cpu")
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: Unknown model 'gpt-9'. Known: ")
    assert result.stderr.count("\n") == 1


@pytest.mark.vllm
def test_vllm_knows_each_served_architecture_and_parses_its_plans():
    """For every profile the planner can serve: vLLM 0.32 (the CPU build installed for the
    tests) registers its architecture, and its own argument parser takes the plan's flags,
    4-bit plans of published checkpoints included."""
    from vllm_support import server

    if not server.installed():
        pytest.skip("no vLLM install: run scripts/setup-vllm")
    served = [p for p in all_profiles() if getattr(p, "serving", None) is not None]
    plans, architectures = [], sorted({p.architecture for p in served})
    for profile in served:
        for card in (L4, H100):
            plans.append(plan(card, PlanOptions(), profile.serving).args())
        for method, hub_id in profile.quantized.items():
            if method in ("awq", "gptq"):
                options = PlanOptions(quantization=method, checkpoints=((method, hub_id),))
                plans.append(plan(L4, options, profile.serving).args())
    script = """
import json, sys
from vllm import ModelRegistry
from vllm.entrypoints.launchers.cli_args import make_arg_parser
from vllm.utils.argparse_utils import FlexibleArgumentParser
request = json.load(sys.stdin)
print(json.dumps(sorted(set(request["archs"]) - set(ModelRegistry.get_supported_archs()))))
parser = make_arg_parser(FlexibleArgumentParser())
for args in request["plans"]:
    ns = parser.parse_args(["--model", "m", *args])
    print(json.dumps([ns.max_model_len, ns.quantization, ns.logits_processors]))
"""
    result = subprocess.run(
        [server.python(), "-c", script],
        input=json.dumps({"archs": architectures, "plans": plans}),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    missing, *parsed = (json.loads(line) for line in result.stdout.splitlines())
    assert missing == [], f"vLLM does not know {missing}"
    assert len(parsed) == len(plans)
    for args, (max_model_len, quantization, processors) in zip(plans, parsed, strict=True):
        assert max_model_len == int(args[args.index("--max-model-len") + 1])
        if "--quantization" in args:
            assert quantization == args[args.index("--quantization") + 1]
        if "--logits-processors" in args:
            assert processors == [args[args.index("--logits-processors") + 1]]


# What a server with a lower pixel cap than ours did to the image: ``served_size``.
SMART_RESIZING = [p for p in all_profiles() if p.server_smart_resizes]


def _served_by_cap(profile: ChatProfile, width: int, height: int, cap: int) -> tuple[int, int]:
    """The (width, height) a server with pixel cap ``cap`` gives the image we sent."""
    h, w = smart_resize(
        height, width, factor=profile.factor, min_pixels=profile.min_pixels, max_pixels=cap
    )
    return w, h


def _every_served_size(profile: ChatProfile, width: int, height: int) -> dict[int, tuple]:
    """Image tokens -> size, over every cap from min_pixels up: each side is floor(sqrt(cap
    * ratio)) under the cap, so it steps only at caps k^2 * f^2 * ratio, and trying those
    (ceiled) and the bounds finds every size there is."""
    ff = profile.factor * profile.factor
    caps = {profile.min_pixels, width * height}
    for k in range(1, max(width, height) // profile.factor + 2):
        caps.add(-(-k * k * ff * width // height))
        caps.add(-(-k * k * ff * height // width))
    sizes = {}
    for cap in sorted(c for c in caps if profile.min_pixels <= c <= width * height):
        w, h = _served_by_cap(profile, width, height, cap)
        sizes.setdefault(image_tokens(h, w, profile.factor), (w, h))
    return sizes


def test_the_families_that_size_images_with_smart_resize() -> None:
    names = {p.name for p in SMART_RESIZING}
    assert {"dots.ocr", "dots.mocr", "qwen2.5-vl", "qwen3-vl", "paddleocr-vl"} <= names
    assert not names & {"deepseek-ocr", "got-ocr2", "phi-3.5-vision"}


@pytest.mark.parametrize("profile", SMART_RESIZING, ids=lambda p: p.name)
@settings(max_examples=60, deadline=None)
@given(
    width=st.integers(min_value=20, max_value=6000),
    height=st.integers(min_value=20, max_value=6000),
    share=st.floats(min_value=0.0, max_value=1.2),
)
def test_served_size_finds_the_size_a_lower_server_cap_gave(profile, width, height, share):
    """Prepared with our full cap, re-sized by a server with a lower one: the tokens the
    server reports give back exactly the size it used."""
    assume(max(width, height) <= 50 * min(width, height))
    sent_w, sent_h = profile.model_size(width, height)
    cap = max(profile.min_pixels, int(sent_w * sent_h * share))
    served_w, served_h = _served_by_cap(profile, sent_w, sent_h, cap)
    tokens = image_tokens(served_h, served_w, profile.factor)
    assert profile.served_size(sent_w, sent_h, tokens) == (served_w, served_h)


@pytest.mark.parametrize("profile", SMART_RESIZING, ids=lambda p: p.name)
@pytest.mark.parametrize("page", [(1700, 2200), (2480, 3508), (640, 480), (300, 2900)])
def test_served_size_is_none_for_a_count_no_cap_gives(profile, page) -> None:
    sent_w, sent_h = profile.model_size(*page)
    sent_tokens = profile.image_tokens(sent_w, sent_h)
    sizes = _every_served_size(profile, sent_w, sent_h)
    assert sizes[sent_tokens] == (sent_w, sent_h)
    assert profile.served_size(sent_w, sent_h, sent_tokens) == (sent_w, sent_h)
    for tokens in range(0, sent_tokens + 3):
        assert profile.served_size(sent_w, sent_h, tokens) == sizes.get(tokens), tokens
    assert len(sizes) < sent_tokens  # most counts are not any cap's


def test_qwen3_vl_sizes_in_32_pixel_steps() -> None:
    profile = get_profile("qwen3-vl")
    sent_w, sent_h = profile.model_size(1700, 2200)
    assert (sent_w % 32, sent_h % 32) == (0, 0)
    served_w, served_h = _served_by_cap(profile, sent_w, sent_h, 1024 * 768)
    assert (served_w, served_h) == (768, 992)
    tokens = image_tokens(served_h, served_w, 32)
    assert profile.served_size(sent_w, sent_h, tokens) == (768, 992)
    as_if_28 = dataclasses.replace(profile, factor=28).served_size(sent_w, sent_h, tokens)
    assert as_if_28 != (768, 992)  # the profile's own factor decides


@pytest.mark.parametrize("name", ["deepseek-ocr", "got-ocr2", "phi-3.5-vision"])
def test_served_size_does_not_apply_to_fixed_size_or_tiling_families(name) -> None:
    profile = get_profile(name)
    assert profile.server_smart_resizes is False
    width, height = profile.model_size(1700, 2200)
    assert profile.served_size(width, height, profile.image_tokens(width, height)) is None
