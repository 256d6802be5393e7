"""``@@plonecelery-sources``: list, add, edit, test, backfill and remove blog sources.

One view, three modes chosen by the query string: the overview (sources, their webhook URLs,
the latest deliveries), ``?add=1`` (a form for a new source) and ``?edit=<id>`` (the form
for an existing one). Forms post back to the view with a CSRF authenticator. Secrets are
write-only here too: the form shows whether one is set, never its value; leaving the field
empty keeps it.

Everything goes through :mod:`collective.plonecelery.blogs.storage`, the same functions
as the REST API (``@blog-sources``), so both apply the same validation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from plone.protect.authenticator import check as check_authenticator
from Products.Five.browser import BrowserView
from Products.statusmessages.interfaces import IStatusMessage

from collective.plonecelery.blogs import deliveries
from collective.plonecelery.blogs import storage
from collective.plonecelery.blogs import subscriptions
from collective.plonecelery.blogs.config import KINDS
from collective.plonecelery.blogs.config import ON_REMOVE
from collective.plonecelery.blogs.config import SECRET_FIELDS
from collective.plonecelery.blogs.config import VOLTO_BLOCKS
from collective.plonecelery.blogs.config import SourceConfig
from collective.plonecelery.blogs.importer import websub
from collective.plonecelery.blogs.storage import webhook_urls
from collective.plonecelery.blogs.verify.signatures import SCHEMES

from . import _

#: How many deliveries the overview shows.
DELIVERIES_SHOWN = 25


@dataclass(frozen=True)
class Field:
    """One input of the source form."""

    name: str
    label: Any
    widget: str  # 'text' | 'secret' | 'select' | 'bool' | 'lines' | 'int'
    help: Any = ""
    choices: tuple[str, ...] = ()


FIELDS = (
    Field(
        "id",
        _("label_source_id", default="Id"),
        "text",
        _("help_source_id", default="Part of the webhook URL: a-z, 0-9, '-' and '_'."),
    ),
    Field("title", _("label_source_title", default="Title"), "text"),
    Field("kind", _("label_source_kind", default="Kind"), "select", choices=KINDS),
    Field(
        "api_url",
        _("label_api_url", default="API URL"),
        "text",
        _(
            "help_api_url",
            default="The blog's address (Ghost, WordPress) or the feed's URL (feed).",
        ),
    ),
    Field(
        "api_key",
        _("label_api_key", default="Ghost Content API key"),
        "secret",
        _("help_api_key", default="Ghost admin > Integrations > Content API key."),
    ),
    Field("username", _("label_username", default="WordPress user (optional)"), "text"),
    Field(
        "app_password",
        _("label_app_password", default="WordPress application password (optional)"),
        "secret",
    ),
    Field(
        "scheme", _("label_scheme", default="Webhook signature scheme"), "select", choices=SCHEMES
    ),
    Field(
        "secret",
        _("label_secret", default="Webhook secret"),
        "secret",
        _("help_secret", default="The secret the blog signs its webhooks with."),
    ),
    Field(
        "header_name",
        _("label_header_name", default="Signature header"),
        "text",
        _(
            "help_header_name",
            default="Only to rename the header of hmac-sha256-base64, websub or github, "
            "e.g. X-WC-Webhook-Signature.",
        ),
    ),
    Field(
        "insecure",
        _("label_insecure", default="Insecure"),
        "bool",
        _(
            "help_insecure",
            default="Allows unsigned webhooks (scheme 'none') and credentials over plain "
            "http. Trusted networks only.",
        ),
    ),
    Field(
        "target",
        _("label_target", default="Target folder"),
        "text",
        _("help_target", default="Path in the site (e.g. news) or UID of a folder."),
    ),
    Field("portal_type", _("label_portal_type", default="Content type"), "text"),
    Field(
        "import_user",
        _("label_import_user", default="Import user"),
        "text",
        _(
            "help_import_user",
            default="Imports run as this user; it gets Contributor, Editor and Reviewer "
            "on the target folder only.",
        ),
    ),
    Field(
        "transition",
        _("label_transition", default="Workflow transition for published posts"),
        "text",
    ),
    Field(
        "on_remove",
        _("label_on_remove", default="When a post is unpublished or deleted"),
        "select",
        choices=ON_REMOVE,
    ),
    Field(
        "cdn_hosts",
        _("label_cdn_hosts", default="Image hosts"),
        "lines",
        _("help_cdn_hosts", default="Extra hosts images may come from, one per line."),
    ),
    Field(
        "allow_private",
        _("label_allow_private", default="Allow private addresses"),
        "bool",
        _(
            "help_allow_private",
            default="Lets workers fetch from loopback or private networks (local test blogs).",
        ),
    ),
    Field(
        "iframe_hosts",
        _("label_iframe_hosts", default="Allowed iframe hosts"),
        "lines",
    ),
    Field(
        "tolerance",
        _("label_tolerance", default="Timestamp tolerance (seconds)"),
        "int",
    ),
    Field(
        "volto_blocks",
        _("label_volto_blocks", default="Volto blocks"),
        "select",
        _(
            "help_volto_blocks",
            default="Also write the post as Volto blocks: auto (when plone.volto is "
            "installed), on, or off (text only, Classic UI).",
        ),
        choices=VOLTO_BLOCKS,
    ),
    Field(
        "sync_hours",
        _("label_sync_hours", default="Sync every (hours)"),
        "number",
        _(
            "help_sync_hours",
            default="A worker reads the newest posts this often and imports what webhooks "
            "missed. 0: never.",
        ),
    ),
    Field(
        "poll_minutes",
        _("label_poll_minutes", default="Poll the feed every (minutes)"),
        "number",
        _("help_poll_minutes", default="Feeds only; 0: never (or as Sync every says)."),
    ),
    Field(
        "websub",
        _("label_websub", default="Subscribe to the feed's WebSub hub"),
        "bool",
        _(
            "help_websub",
            default="Feeds only, signature scheme websub: a worker subscribes to the hub "
            "(with a secret of its own), renews the lease and unsubscribes when the source "
            "is removed. Needs PLONECELERY_PUBLIC_URL.",
        ),
    ),
    Field(
        "hub_url",
        _("label_hub_url", default="WebSub hub URL (optional)"),
        "text",
        _("help_hub_url", default='Empty: the hub the feed announces (rel="hub").'),
    ),
    Field(
        "sync_max_posts",
        _("label_sync_max_posts", default="Posts read per scheduled sync"),
        "int",
    ),
    Field(
        "ghost_pages",
        _("label_ghost_pages", default="Import Ghost pages"),
        "bool",
        _("help_ghost_pages", default="Ghost only: page.* webhooks import pages too."),
    ),
    Field("page_portal_type", _("label_page_portal_type", default="Content type of pages"), "text"),
)


class SourcesControlPanel(BrowserView):
    """The blog sources control panel."""

    #: The values shown in the form after a failed save.
    submitted: dict[str, Any] | None = None
    #: Why saving failed (shown above the form).
    error: str | None = None

    def __call__(self):
        if self.request.get("REQUEST_METHOD", "GET").upper() == "POST":
            if self.handle_post():
                return ""
        elif self.mode == "edit":
            try:
                storage.get_source(self.request.form["edit"], portal=self.context)
            except storage.UnknownSource as exc:
                IStatusMessage(self.request).add(str(exc), type="error")
                self.request.response.redirect(self.url)
                return ""
        return self.index()

    # -- what the template shows ----------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"{self.context.absolute_url()}/@@plonecelery-sources"

    @property
    def mode(self) -> str:
        """'add', 'edit' or 'overview'."""
        form = self.request.form
        if form.get("add") or form.get("mode") == "add":
            return "add"
        if form.get("edit"):
            return "edit"
        return "overview"

    def sources(self) -> list[dict[str, Any]]:
        rows = []
        for config in storage.list_sources(portal=self.context):
            data = config.to_dict()
            data["webhook_urls"] = webhook_urls(self.context, config.id)
            data["paused"] = storage.pause_info(config.id, portal=self.context)
            data["websub_state"] = subscriptions.info(config.id, portal=self.context)
            rows.append(data)
        return rows

    def deliveries(self) -> list[dict[str, Any]]:
        source_id = self.request.form.get("source") or None
        return deliveries.list_deliveries(
            source_id=source_id, limit=DELIVERIES_SHOWN, portal=self.context
        )

    def form_fields(self) -> list[dict[str, Any]]:
        """The fields with their current values (secrets: only whether they are set)."""
        if self.mode == "edit":
            current = storage.get_source(self.request.form["edit"], portal=self.context)
        else:
            current = SourceConfig(id="", title="", kind="ghost", api_url="")
        values = current.to_dict(include_secrets=False)
        if self.submitted is not None:
            values.update(
                {key: value for key, value in self.submitted.items() if key not in SECRET_FIELDS}
            )
        fields = []
        for field in FIELDS:
            value = values.get(field.name)
            fields.append(
                {
                    "name": field.name,
                    "label": field.label,
                    "widget": field.widget,
                    "help": field.help,
                    "choices": field.choices,
                    "value": "\n".join(value) if field.widget == "lines" else value,
                    "is_set": bool(value.get("set")) if field.widget == "secret" else False,
                    "readonly": field.name == "id" and self.mode == "edit",
                }
            )
        return fields

    # -- what the buttons do --------------------------------------------------------------------

    def handle_post(self) -> bool:
        """Apply the posted action; True when the answer is a redirect."""
        check_authenticator(self.request)
        form = self.request.form
        messages = IStatusMessage(self.request)
        source_id = form.get("source_id", "")
        try:
            if "form.buttons.cancel" in form:
                pass
            elif "form.buttons.save" in form:
                self.save(form)
                messages.add(_("msg_source_saved", default="Source saved."), type="info")
            elif "form.buttons.delete" in form:
                websub.remove_source(source_id, portal=self.context)
                messages.add(_("msg_source_removed", default="Source removed."), type="info")
            elif "form.buttons.test" in form or "form.buttons.backfill" in form:
                task_id = self.queue(source_id, test="form.buttons.test" in form)
                messages.add(
                    _(
                        "msg_task_queued",
                        default="Task ${task} queued; its progress shows in the deliveries.",
                        mapping={"task": task_id},
                    ),
                    type="info",
                )
        except (ValueError, KeyError) as exc:
            if "form.buttons.save" in form:
                self.error = str(exc)
                return False  # show the form again, with the error and what was typed
            messages.add(str(exc), type="error")
        self.request.response.redirect(self.url)
        return True

    def save(self, form) -> None:
        data = self.parse(form)
        self.submitted = data
        if form.get("mode") == "edit":
            source_id = form.get("source_id", "")
            self.request.form["edit"] = source_id  # keep editing it if saving fails
            data.pop("id", None)
            websub.update_source(source_id, data, portal=self.context)
        else:
            self.request.form["mode"] = "add"
            websub.add_source(storage.config_from_data(data), portal=self.context)

    def queue(self, source_id: str, *, test: bool) -> str:
        from collective.plonecelery.blogs import importer

        config = storage.get_source(source_id, portal=self.context)
        if test:
            return importer.test_source.delay(config.id).id
        return importer.queue_backfill(config).id

    @staticmethod
    def parse(form) -> dict[str, Any]:
        """Typed source data from the submitted form; empty secrets are left out."""
        data: dict[str, Any] = {}
        for field in FIELDS:
            raw = form.get(field.name)
            if field.widget == "bool":
                data[field.name] = bool(raw)
            elif field.widget == "secret":
                if raw:
                    data[field.name] = raw
            elif field.widget == "lines":
                text = raw or ""
                data[field.name] = [line.strip() for line in text.splitlines() if line.strip()]
            elif field.widget in ("int", "number"):
                kind, word = (
                    (int, "a whole number") if field.widget == "int" else (float, "a number")
                )
                try:
                    data[field.name] = kind(str(raw or "").strip() or 0)
                except ValueError:
                    raise ValueError(f"{field.name} must be {word}, not {raw!r}") from None
            else:
                data[field.name] = (raw or "").strip()
        return data
