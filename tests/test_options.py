"""The typed option checkers every command and the trainer share (gancolor.options)."""

import pytest

from gancolor.errors import ConfigError
from gancolor.options import bool_option, int_option, temperature_option


@pytest.mark.parametrize("value, expected", [(3, 3), (0, 0), (4.0, 4), ("7", 7), (" 12 ", 12), ("-1", -1)])
def test_int_option_takes_ints_whole_floats_and_digit_strings(value, expected):
    assert int_option("trainer.max_steps", value, -5) == expected


@pytest.mark.parametrize("value", ["abc", "2.5", 2.5, "+3", "", None, True, False, [1], float("inf"), float("nan")])
def test_int_option_refuses_anything_else_naming_key_and_type(value):
    with pytest.raises(ConfigError) as info:
        int_option("trainer.max_steps", value, 0)
    assert str(info.value) == f"trainer.max_steps must be an integer, got {value!r}"


def test_int_option_minimum_and_null():
    with pytest.raises(ConfigError, match=r"^render_size must be >= 1, got 0$"):
        int_option("render_size", 0, 1)
    with pytest.raises(ConfigError, match=r"^keep_last must be >= 1, got -2$"):
        int_option("keep_last", "-2", 1)
    assert int_option("render_size", None, 1, allow_none=True) is None
    with pytest.raises(ConfigError, match=r"^batch_size must be an integer or null, got 'x'$"):
        int_option("batch_size", "x", 1, allow_none=True)


def test_int_option_is_a_drop_in_for_the_trainers_checker():
    # Same arguments in the same order as the trainer's own checks: name, value, minimum.
    assert int_option("trainer.max_epochs", 2, 1) == 2
    with pytest.raises(ConfigError, match=r"^trainer.max_epochs must be an integer, got 'zero'$"):
        int_option("trainer.max_epochs", "zero", 1)


def test_bool_and_temperature_options():
    assert bool_option("overwrite", True) is True
    with pytest.raises(ConfigError, match="overwrite must be true or false, got 1"):
        bool_option("overwrite", 1)
    assert temperature_option(None) is None
    assert temperature_option("0.38") == pytest.approx(0.38)
    with pytest.raises(ConfigError, match="temperature must be a number"):
        temperature_option("warm")
    with pytest.raises(ConfigError, match="temperature must be >= 0"):
        temperature_option(-0.1)


def test_int_or_auto_option():
    from gancolor.options import int_or_auto_option

    assert int_or_auto_option("workers", "auto", 1) is None
    assert int_or_auto_option("workers", 3, 1) == 3 and int_or_auto_option("workers", "4", 1) == 4
    with pytest.raises(ConfigError, match=r"^workers must be >= 1, got 0$"):
        int_or_auto_option("workers", 0, 1)
    for value in ("x", None, True, 2.5, "Auto"):
        with pytest.raises(ConfigError, match=rf"^workers must be an integer or auto, got {value!r}$".replace(".", r"\.")):
            int_or_auto_option("workers", value, 1)
