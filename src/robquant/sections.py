"""The bases of a study file's sections (:mod:`robquant.pipeline.study`): pydantic models that refuse
unknown keys and are frozen once read. An evaluation add-on's section (its options in a study's
``evaluation``) lives with the add-on (:mod:`robquant.evaluation.addons`) on :class:`Switched`."""

from __future__ import annotations

from typing import Any, ClassVar, Optional

from pydantic import BaseModel, ConfigDict, model_validator


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Switched(Section):
    """An evaluation option that is off unless given: ``true``/``false``, or its options (which switch
    it on unless they say otherwise); ``seeds`` limits it to the models of those seeds. ``HELP``: the
    line the study schema shows for the option itself."""

    HELP: ClassVar[str] = ""

    enabled: bool
    seeds: Optional[list[int]]

    def applies(self, seed: int) -> bool:
        return self.enabled and (self.seeds is None or seed in self.seeds)

    @model_validator(mode="before")
    @classmethod
    def _switch(cls, value: Any) -> Any:
        if isinstance(value, bool):
            return {"enabled": value}
        return {"enabled": True, **value} if isinstance(value, dict) else value
