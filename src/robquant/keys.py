"""Field metadata that decides what a stage's key is taken over (:func:`robquant.pipeline.specs.spec_key`)."""

UNKEYED = {"keyed": False}  # where the data lives, a display label: not what a stage computes
KEYED_IF_SET = {"keyed": "if_set"}  # a later addition: left out of the key while None, so older keys still match
BY_FIELD = {"keyed": "by_field"}  # a tuple of runs keyed each under its own FIELD (an evaluation's add-ons)
