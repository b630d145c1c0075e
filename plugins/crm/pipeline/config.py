"""Pipeline configuration files: the product page's YAML (`销售管道 / 阶段 / 名称 / 概率 / 活动`) and the
same with English keys, parsed and checked into a `PipelineSpec`, and written back in the keys it came in.

Nothing here touches the database; every problem names the stage and the key it is about.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

import yaml
from flask_babel import gettext

from bigledger_core.errors import BigLedgerError

# Chinese key -> English key. Each level accepts either spelling.
TOP_KEYS = {"销售管道": "pipeline"}
PIPELINE_KEYS = {"阶段": "stages", "名称": "name", "英文名称": "name_en", "默认": "default"}
STAGE_KEYS = {"名称": "name", "英文名称": "name_en", "概率": "probability", "活动": "activities",
              "必须完成": "activities_required", "期限天数": "task_due_days"}
_ENGLISH = {v: k for k, v in {**TOP_KEYS, **PIPELINE_KEYS, **STAGE_KEYS}.items()}


class PipelineConfigError(BigLedgerError):
    """A pipeline file that cannot be used; `problems` lists every problem (already translated)."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


@dataclass
class StageSpec:
    name: str
    probability: Decimal
    activities: list[str] = field(default_factory=list)
    name_en: str | None = None
    activities_required: bool = False
    task_due_days: int = 3


@dataclass
class PipelineSpec:
    stages: list[StageSpec]
    name: str | None = None
    name_en: str | None = None
    default: bool | None = None
    key_language: str = "zh"


def parse_probability(value) -> Decimal:
    """`10%`, `10`, `0.1` (and `10 %`, `１０％`) as a fraction; ValueError when it is not a number in 0–100 %."""
    if isinstance(value, bool) or value is None:
        raise ValueError(value)
    text = str(value).strip().replace("％", "%").translate(str.maketrans("０１２３４５６７８９．", "0123456789."))
    percent = text.endswith("%")
    try:
        number = Decimal(text.rstrip("%").strip())
    except InvalidOperation:
        raise ValueError(value) from None
    if not number.is_finite():
        raise ValueError(value)
    if percent or number > 1:
        number = number / 100
    if number < 0 or number > 1:
        raise ValueError(value)
    return number.quantize(Decimal("0.0001"))


def format_probability(value: Decimal) -> str:
    percent = (Decimal(value) * 100).normalize()
    return f"{percent:f}%"


def _where(index: int, stage: dict | None) -> str:
    name = stage.get("name") if isinstance(stage, dict) else None
    if isinstance(name, str) and name.strip():
        return gettext("stage %(number)d (%(name)s)", number=index + 1, name=name.strip())
    return gettext("stage %(number)d", number=index + 1)


def _english(mapping: dict, allowed: dict, where: str, problems: list[str]) -> tuple[dict, set[str]]:
    """Keys translated to English; unknown keys reported with the keys that are allowed."""
    result, languages = {}, set()
    for key, value in mapping.items():
        key_text = str(key).strip()
        if key_text in allowed:
            result[allowed[key_text]] = value
            languages.add("zh")
        elif key_text in allowed.values():
            result[key_text] = value
            languages.add("en")
        else:
            known = ", ".join(f"{zh} / {en}" for zh, en in allowed.items())
            problems.append(gettext("%(where)s: unknown key “%(key)s” (known keys: %(known)s)",
                                    where=where, key=key_text, known=known))
    return result, languages


def parse(text: str) -> PipelineSpec:
    """Read a pipeline file (YAML or JSON text). Raises PipelineConfigError listing every problem."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = gettext("line %(line)d, column %(column)d", line=mark.line + 1, column=mark.column + 1) \
            if mark is not None else ""
        raise PipelineConfigError([gettext("The file is not valid YAML (%(where)s): %(problem)s",
                                           where=where, problem=getattr(exc, "problem", None) or exc)]) from None
    return from_document(document)


def from_document(document) -> PipelineSpec:
    """Check a loaded document (dict) and turn it into a PipelineSpec."""
    problems: list[str] = []
    top = gettext("file")
    if not isinstance(document, dict):
        raise PipelineConfigError([gettext("The file must start with “销售管道:” (or “pipeline:”).")])
    document, languages = _english(document, TOP_KEYS, top, problems)
    body = document.get("pipeline")
    if not isinstance(body, dict):
        raise PipelineConfigError(problems or [gettext("The file must start with “销售管道:” (or “pipeline:”).")])
    where = gettext("pipeline")
    body, more = _english(body, PIPELINE_KEYS, where, problems)
    languages |= more
    stages = body.get("stages")
    if not isinstance(stages, list) or not stages:
        problems.append(gettext("%(where)s: “阶段” (stages) must list at least one stage", where=where))
        raise PipelineConfigError(problems)
    specs: list[StageSpec] = []
    seen: dict[str, int] = {}
    for index, raw in enumerate(stages):
        if not isinstance(raw, dict):
            problems.append(gettext("%(where)s: a stage needs “名称” (name) and “概率” (probability)",
                                    where=_where(index, None)))
            continue
        stage, more = _english(raw, STAGE_KEYS, _where(index, {"name": raw.get("名称", raw.get("name"))}), problems)
        languages |= more
        label = _where(index, stage)
        name = stage.get("name")
        if not isinstance(name, (str, int)) or not str(name).strip():
            problems.append(gettext("%(where)s: “名称” (name) is missing", where=label))
            continue
        name = str(name).strip()
        if len(name) > 100:
            problems.append(gettext("%(where)s: “名称” (name) is longer than %(max)d characters", where=label, max=100))
        key = name.casefold()
        if key in seen:
            problems.append(gettext("%(where)s: the name “%(name)s” is already used by stage %(other)d",
                                    where=label, name=name, other=seen[key] + 1))
        seen[key] = index
        if "probability" not in stage:
            problems.append(gettext("%(where)s: “概率” (probability) is missing", where=label))
            continue
        try:
            probability = parse_probability(stage["probability"])
        except ValueError:
            problems.append(gettext("%(where)s: “概率” (probability) must be between 0%% and 100%%, not "
                                    "“%(value)s”", where=label, value=stage["probability"]))
            continue
        activities = stage.get("activities") or []
        if isinstance(activities, str):
            activities = [activities]
        if not isinstance(activities, list) or not all(isinstance(a, (str, int)) and str(a).strip()
                                                        for a in activities):
            problems.append(gettext("%(where)s: “活动” (activities) must be a list of names", where=label))
            activities = []
        activities = [str(a).strip() for a in activities]
        if len(set(activities)) != len(activities):
            problems.append(gettext("%(where)s: “活动” (activities) lists the same activity twice", where=label))
        required = stage.get("activities_required", False)
        if not isinstance(required, bool):
            problems.append(gettext("%(where)s: “必须完成” (activities_required) must be true or false", where=label))
            required = False
        due = stage.get("task_due_days", 3)
        if isinstance(due, bool) or not isinstance(due, int) or not 0 <= due <= 365:
            problems.append(gettext("%(where)s: “期限天数” (task_due_days) must be a whole number of days "
                                    "from 0 to 365", where=label))
            due = 3
        name_en = stage.get("name_en")
        specs.append(StageSpec(name=name, probability=probability, activities=activities,
                               name_en=str(name_en).strip() if name_en else None,
                               activities_required=required, task_due_days=due))
    if specs and not problems and specs[-1].probability != 1:
        problems.append(gettext("%(where)s: the last stage is where won deals go, so its “概率” (probability) "
                                "must be 100%%, not %(value)s", where=_where(len(specs) - 1, {"name": specs[-1].name}),
                                value=format_probability(specs[-1].probability)))
    if problems:
        raise PipelineConfigError(problems)
    name = body.get("name")
    default = body.get("default")
    return PipelineSpec(stages=specs, name=str(name).strip() if name else None,
                        name_en=str(body["name_en"]).strip() if body.get("name_en") else None,
                        default=default if isinstance(default, bool) else None,
                        key_language="en" if languages == {"en"} else "zh")


def to_document(spec: PipelineSpec) -> dict:
    """The spec as a document in the keys it was loaded with; defaults are left out so that the product
    page's file comes back as written."""
    zh = spec.key_language != "en"

    def key(english: str) -> str:
        return _ENGLISH[english] if zh else english

    stages = []
    for stage in spec.stages:
        item = {key("name"): stage.name}
        if stage.name_en:
            item[key("name_en")] = stage.name_en
        item[key("probability")] = format_probability(stage.probability)
        item[key("activities")] = list(stage.activities)
        if stage.activities_required:
            item[key("activities_required")] = True
        if stage.task_due_days != 3:
            item[key("task_due_days")] = stage.task_due_days
        stages.append(item)
    body = {}
    if spec.name:
        body[key("name")] = spec.name
    if spec.name_en:
        body[key("name_en")] = spec.name_en
    body[key("stages")] = stages
    return {key("pipeline"): body}


class _Dumper(yaml.SafeDumper):
    """Block lists indented under their key, lists of names in flow style, as on the product page."""

    def increase_indent(self, flow=False, indentless=False):
        return super().increase_indent(flow, False)


class _Quoted(str):
    pass


def _list(dumper, data):
    names = bool(data) and all(isinstance(x, str) for x in data)
    items = [_Quoted(x) for x in data] if names else data
    return dumper.represent_sequence("tag:yaml.org,2002:seq", items, flow_style=names)


_Dumper.add_representer(list, _list)
_Dumper.add_representer(_Quoted, lambda dumper, data: dumper.represent_scalar("tag:yaml.org,2002:str", data,
                                                                               style='"'))


def dump(spec: PipelineSpec) -> str:
    """YAML text in the product page's layout (activities as `["初次联系", "资质认定电话"]`)."""
    return yaml.dump(to_document(spec), Dumper=_Dumper, allow_unicode=True, sort_keys=False, indent=2,
                     default_flow_style=False, width=120)
