"""What values each model setting accepts: every model declares a rule per setting in a
``SETTINGS`` class attribute, and ``check`` applies them before anything is built.

A rule is a function of the value that returns None (fine) or the end of a sentence
saying what is wrong ("must be one of relu, gelu; did you mean 'relu'?").
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable

Rule = Callable[[object], "str | None"]


def did_you_mean(value: str, choices: Iterable[str]) -> str:
  """'did you mean 'x'? ' for the closest choice, or '' when none is close."""
  match = difflib.get_close_matches(str(value), list(choices), n=1)
  return f"did you mean {match[0]!r}? " if match else ""


def one_of(choices: Iterable[str]) -> Rule:
  choices = list(choices)

  def rule(value):
    if value in choices:
      return None
    hint = did_you_mean(value, choices)
    return f"must be one of {', '.join(choices)}" + (f"; {hint.strip()}" if hint else ".")
  return rule


def each(rule: Rule, min_len: int = 0) -> Rule:
  """Every entry of a sequence passes `rule`; at least `min_len` entries."""
  def check(value):
    if len(value) < min_len:
      return f"needs at least {min_len} entr{'y' if min_len == 1 else 'ies'}."
    for item in value:
      problem = rule(item)
      if problem:
        return f"has the entry {item!r}, which {problem}"
    return None
  return check


def at_least(low: float) -> Rule:
  return lambda value: None if value >= low else f"must be at least {low}."


def fraction(value) -> str | None:
  """A probability such as a dropout rate: in [0, 1)."""
  return None if 0.0 <= value < 1.0 else "must be in [0, 1)."


positive = at_least(1)


def check(settings: dict, rules: dict[str, Rule]) -> str | None:
  """The first problem with `settings`, as 'config.model.KEY=VALUE REASON', or None."""
  for key, rule in rules.items():
    if key in settings:
      problem = rule(settings[key])
      if problem:
        value = settings[key]
        value = tuple(value) if isinstance(value, list) else value
        return f"config.model.{key}={value!r} {problem}"
  return None
