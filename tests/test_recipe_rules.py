"""Per-layer rule tables: exact name over ``re:`` pattern over ``default``, the first matching
pattern in file order, partial rules merged over the default, null rules leave a layer alone."""

from compress.recipe.rules import applicable_rule, resolve, resolve_all

RULES = {"default": {"weight_bits": 8, "act_bits": 8}, "re:conv.*": {"weight_bits": 4},
         "re:c.*": {"weight_bits": 2, "act_bits": None}, "conv.0": {"act_bits": None}, "head": None}


def test_exact_name_wins_over_patterns_and_merges_over_the_default() -> None:
    assert applicable_rule(RULES, "conv.0") == "conv.0"
    assert resolve(RULES, "conv.0") == {"weight_bits": 8, "act_bits": None}  # not the patterns' 4 or 2 bits


def test_the_first_matching_pattern_in_file_order_wins() -> None:
    assert applicable_rule(RULES, "conv.1") == "re:conv.*"
    assert resolve(RULES, "conv.1") == {"weight_bits": 4, "act_bits": 8}
    assert resolve(RULES, "cls") == {"weight_bits": 2, "act_bits": None}
    reordered = {"re:c.*": RULES["re:c.*"], "re:conv.*": RULES["re:conv.*"]}
    assert resolve(reordered, "conv.1") == {"weight_bits": 2, "act_bits": None}


def test_patterns_match_the_whole_name() -> None:
    assert applicable_rule(RULES, "block.conv") is None  # re:c.* does not match mid-name
    assert resolve(RULES, "block.conv") == {"weight_bits": 8, "act_bits": 8}


def test_the_default_covers_the_rest_and_null_leaves_a_layer_alone() -> None:
    assert resolve(RULES, "stem") == {"weight_bits": 8, "act_bits": 8}
    assert resolve(RULES, "head") is None
    assert resolve({"head": {"weight_bits": 4}}, "stem") is None  # no default: untouched
    assert resolve({"default": None, "head": {"weight_bits": 4}}, "head") == {"weight_bits": 4}
    assert resolve_all(RULES, ["stem", "conv.0", "head"]) == {"stem": {"weight_bits": 8, "act_bits": 8},
                                                              "conv.0": {"weight_bits": 8, "act_bits": None}}


def test_resolving_copies_the_rules() -> None:
    resolve(RULES, "stem")["weight_bits"] = 2
    assert RULES["default"] == {"weight_bits": 8, "act_bits": 8}
