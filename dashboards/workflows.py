"""The Workflows row of each tier's usage dashboard: the paths users take and where they drop out.

Reads the workflow families (``exporter.instrument.workflows``): the top
action-to-action transitions over the selected range (``start``/``end`` are
a session's first action and its end), and each configured funnel's
step-to-step conversion. The funnels are the exporter's config, unknown
here: the conversion query pairs every step with the step before it
generically, by renaming the previous step's ``step`` label one up
(``label_replace``, 1 -> 2 ... 9 -> 10) and dividing on ``funnel`` and
``step``. A previous step with no sessions in the range gives no value,
never NaN.
"""

from __future__ import annotations

from itertools import pairwise

from exporter.catalog import FUNNEL_STEP
from exporter.promql import agg, increase_range, m, not_equal, on, paren, sum_total

from .layout import Row
from .panels import bargauge, stat, table
from .targets import instant, table_q

TRANSITIONS = m("clary_workflow_transitions_total")
FUNNEL = m("clary_funnel_sessions_total")
EVICTED = m("clary_workflow_sessions_evicted_total")
TOP_TRANSITIONS = 25


def top_transitions(tier: str) -> str:
    """The most frequent (from_action, to_action) moves in the selected range."""
    return f"topk({TOP_TRANSITIONS}, {sum_total(TRANSITIONS, ('from_action', 'to_action'), tier=tier)})"


def _previous_step_renamed(expr: str) -> str:
    """``expr`` with each ``step`` label raised by one (the last step has none after it and is left out)."""
    steps = FUNNEL_STEP.values
    for before, after in reversed(list(pairwise(steps))):  # 9 -> 10 first, so no step moves twice
        expr = f'label_replace({expr}, "step", "{after}", "step", "{before}")'
    return expr


def step_conversion(tier: str) -> str:
    """Sessions reaching each step over those reaching the step before it, per funnel (steps 2 and on)."""
    reached = sum_total(FUNNEL, ("funnel", "step", "action"), tier=tier)
    last = not_equal(FUNNEL_STEP.values[-1])
    previous = agg(increase_range(FUNNEL.sel(tier=tier, step=last)), FUNNEL.grouping(("funnel", "step")))
    return f"{paren(reached)} / {on('funnel', 'step')} group_left () ({_previous_step_renamed(previous)} > 0)"


def workflows_row(tier: str) -> Row:
    t = {"tier": tier}
    return Row(
        "Workflows",
        [
            table(
                "Top workflow transitions",
                "The most frequent moves from one action to the next within a session, over the selected "
                "range: start is a session's first action, end its end (ended, or idle past the exporter's "
                "workflow_session_timeout). Actions off the allow-list count as other.",
                "short",
                table_q(top_transitions(tier)),
                value_column="Moves",
                sort_by="Moves",
                descending=True,
                w=10,
                h=10,
            ),
            bargauge(
                "Funnel step-to-step conversion",
                "Per configured funnel, the share of sessions that reached a step among those that reached the "
                "step before it, over the selected range (steps in order, other actions may come between). No bar "
                "where no session reached the previous step.",
                "percentunit",
                instant(step_conversion(tier), "{{funnel}} {{step}}. {{action}}"),
                max_=1,
                decimals=1,
                w=10,
                h=10,
            ),
            stat(
                "Sessions evicted",
                "Live sessions the exporter forgot in the selected range to stay within workflow_max_sessions "
                "(counted as ended). Above 0: raise the cap or lower workflow_session_timeout.",
                "short",
                instant(sum_total(EVICTED, **t)),
                graph=False,
                w=4,
                h=10,
            ),
        ],
    )
