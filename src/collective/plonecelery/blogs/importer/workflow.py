"""Workflow of imported items: the source's transition, and retracting removed posts."""

from __future__ import annotations

import logging

from .items import item_path

logger = logging.getLogger(__name__)

RETRACTED_STATE = "private"


def apply_transition(config, item) -> bool:
    """Apply ``config.transition`` unless the item is already in its target state.

    Returns True if the workflow state changed. A transition the item's workflow does not
    have is logged and ignored (the post is still imported).
    """
    from plone import api

    if not config.transition:
        return False
    workflow_tool = api.portal.get_tool("portal_workflow")
    target = None
    for workflow in workflow_tool.getWorkflowsFor(item):
        definition = workflow.transitions.get(config.transition)
        if definition is not None:
            target = definition.new_state_id
            break
    if target is None:
        logger.warning(
            "%s: its workflow has no transition %r; set the source's transition",
            item_path(item),
            config.transition,
        )
        return False
    if api.content.get_state(obj=item, default=None) == target:
        return False
    available = {action["id"] for action in workflow_tool.getTransitionsFor(item)}
    if config.transition not in available:
        logger.warning(
            "%s: transition %r is not available to %s in state %r",
            item_path(item),
            config.transition,
            api.user.get_current().getId(),
            api.content.get_state(obj=item, default=None),
        )
        return False
    workflow_tool.doActionFor(item, config.transition)
    return True


def retract(item) -> str | None:
    """Move ``item`` to the private state; returns a note when that is not possible."""
    from plone import api
    from plone.api.exc import InvalidParameterError

    workflow_tool = api.portal.get_tool("portal_workflow")
    if not workflow_tool.getWorkflowsFor(item):
        return f"{item.portal_type} has no workflow: the item could not be retracted"
    if api.content.get_state(obj=item, default=None) == RETRACTED_STATE:
        return None
    try:
        api.content.transition(obj=item, to_state=RETRACTED_STATE)
    except InvalidParameterError as exc:
        raise RuntimeError(
            f"cannot retract {item_path(item)} to {RETRACTED_STATE!r} as "
            f"{api.user.get_current().getId()}: {exc}; grant the import user the Reviewer role "
            "on the target folder, or set on_remove to 'delete'"
        ) from None
    return None
