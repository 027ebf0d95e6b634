"""Per-field overrides: a layer's override pins only the fields the user set; the rest follow
the default (Plan.with_default), through the layer table's edits and through plan JSON."""

import pytest

from lightviz.analysis.editing import apply_layer_edits, shown_sparsity
from lightviz.core.specs import LayerConfig, Plan, PruneSpec, QuantSpec, plan_from_token, plan_to_token

NAMES = ["fc1", "fc2", "fc3"]


def _default(**quant) -> LayerConfig:
    return LayerConfig(quant=QuantSpec(**quant))


def test_table_edit_of_bits_pins_bits_only_and_the_scheme_follows_the_default():
    plan = apply_layer_edits(Plan(), NAMES, {0: {"bits": 4}})
    assert plan.pins_for("fc1") == ("quant.bits",)
    switched = plan.with_default(_default(scheme="asymmetric"))
    assert switched.config_for("fc1").quant == QuantSpec(bits=4, scheme="asymmetric")
    assert switched.config_for("fc2").quant == QuantSpec(scheme="asymmetric")


def test_pinned_field_survives_the_default_passing_through_its_value():
    plan = apply_layer_edits(Plan(), NAMES, {1: {"bits": 4}})
    for bits in (7, 6, 5, 4, 3, 2):  # a global slider dragged down key by key
        plan = plan.with_default(_default(bits=bits))
    assert plan.config_for("fc2").quant.bits == 4 and plan.pins_for("fc2") == ("quant.bits",)
    assert plan.config_for("fc1").quant.bits == 2
    assert Plan.from_json(plan.to_json()) == plan  # "pinned" travels in the JSON (and the link)
    assert plan_from_token(plan_to_token(plan)) == plan


def test_edit_back_to_the_default_unpins_and_an_empty_override_goes():
    plan = apply_layer_edits(Plan(), NAMES, {0: {"bits": 4, "scheme": "asymmetric"}})
    assert plan.pins_for("fc1") == ("quant.bits", "quant.scheme")
    plan = apply_layer_edits(plan, NAMES, {0: {"bits": "8"}})
    assert plan.pins_for("fc1") == ("quant.scheme",)
    plan = apply_layer_edits(plan, NAMES, {0: {"scheme": "symmetric"}})
    assert plan.overrides == () and plan.pinned == ()


def test_keep_float_and_sparsity_are_fields_of_their_own():
    plan = apply_layer_edits(Plan(), NAMES, {2: {"keep_float": True}, 0: {"sparsity": 0.5}})
    rebased = plan.with_default(LayerConfig(quant=QuantSpec(bits=3), prune=PruneSpec(sparsity=0.25)))
    assert rebased.config_for("fc3").keep_float and rebased.config_for("fc3").quant.bits == 3
    assert rebased.config_for("fc1").prune.sparsity == 0.5 and rebased.config_for("fc1").quant.bits == 3


def test_partial_override_json_takes_the_rest_from_the_default():
    plan = Plan.from_dict({"default": {"quant": {"bits": 8, "scheme": "asymmetric"}},
                           "overrides": {"fc1": {"quant": {"bits": 4}}}})
    assert plan.config_for("fc1").quant == QuantSpec(bits=4, scheme="asymmetric")
    assert plan.pins_for("fc1") == ("quant.bits",)


def test_old_plans_load_with_the_differing_fields_pinned():
    old = Plan(overrides={"fc1": _default(bits=4)})  # built as before pins existed
    assert old.pins_for("fc1") == ("quant.bits",)
    assert "pinned" not in old.to_dict()  # the JSON of such plans is unchanged


def test_bad_pins_are_refused_with_the_fields_named():
    with pytest.raises(ValueError, match="pinned fields of 'fc1'"):
        Plan(overrides={"fc1": _default(bits=4)}, pinned={"fc1": ["quant.nonsense"]})


def test_nm_sparsity_is_shown_as_achieved():
    assert shown_sparsity(PruneSpec(sparsity=0.65, method="n:m")) == 0.75
    assert shown_sparsity(PruneSpec(sparsity=0.5, method="n:m")) == 0.5


def test_a_layers_method_and_format_are_fields_too():
    """A method or number format set in the table stays when the global settings change."""
    from lightviz.core.methods.spec import MethodSpec

    plan = apply_layer_edits(Plan(), NAMES, {0: {"method": "gptq"}, 1: {"number_format": "mxfp4"}})
    assert plan.pins_for("fc1") == ("method",) and plan.pins_for("fc2") == ("quant.format",)
    switched = plan.with_default(LayerConfig(quant=QuantSpec(bits=4), method=MethodSpec(name="bias_correction")))
    assert switched.config_for("fc1").method.name == "gptq" and switched.config_for("fc1").quant.bits == 4
    assert switched.config_for("fc2").quant.format == "mxfp4" and switched.config_for("fc2").method.name == \
        "bias_correction"
    assert switched.config_for("fc3").method.name == "bias_correction"
    assert Plan.from_json(switched.to_json()) == switched
