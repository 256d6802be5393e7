"""Least privilege of imports: the import user can write in its source's target folder only.

The import tasks run as the source's import user (``plonecelery-importer``), a Member with
Contributor, Editor and Reviewer granted locally on each source's target folder. Whatever a
post says (its slug, its URL), its item lands in that folder; the user cannot add or change
content anywhere else. Same real HTTP blog and eager tasks as test_importer_tasks.py.
"""

# ruff: noqa: F811 (the fixtures imported from test_importer_tasks are parameters here)

from __future__ import annotations

import pytest
import transaction
from plone import api
from test_importer_tasks import POST_ID
from test_importer_tasks import USER
from test_importer_tasks import blog  # noqa: F401 (fixture)
from test_importer_tasks import deliver
from test_importer_tasks import ghost  # noqa: F401 (fixture)
from test_importer_tasks import ghost_post
from test_importer_tasks import only_item
from test_importer_tasks import portal  # noqa: F401 (fixture)

pytestmark = pytest.mark.timeout(900)

ADD = "Add portal content"
MODIFY = "Modify portal content"


@pytest.fixture
def elsewhere(portal):
    """A folder and a document outside the source's target, made by a Manager."""
    with api.env.adopt_roles(["Manager"]):
        folder = api.content.create(container=portal, type="Folder", id="elsewhere")
        document = api.content.create(container=portal, type="Document", id="about")
    transaction.commit()
    return folder, document


def test_the_import_user_holds_roles_on_its_target_folder_only(portal, ghost, blog, elsewhere):
    blog.add(ghost_post())
    result, _ = deliver(ghost, POST_ID)
    assert result.state == "SUCCESS", result.result
    folder, document = elsewhere
    news = portal["news"]

    assert set(api.user.get_roles(username=USER)) == {"Member", "Authenticated"}
    assert {"Contributor", "Editor", "Reviewer"} <= set(api.user.get_roles(username=USER, obj=news))
    assert api.user.has_permission(ADD, username=USER, obj=news)
    for obj in (portal, folder):
        assert not api.user.has_permission(ADD, username=USER, obj=obj), obj
    assert not api.user.has_permission(MODIFY, username=USER, obj=document)
    assert api.user.has_permission(MODIFY, username=USER, obj=only_item(portal, ghost, POST_ID))


def test_the_import_user_cannot_create_content_outside_its_target(portal, ghost, blog, elsewhere):
    from AccessControl import Unauthorized
    from plone.dexterity.utils import addContentToContainer
    from plone.dexterity.utils import createContent

    blog.add(ghost_post())
    deliver(ghost, POST_ID)
    folder, _ = elsewhere

    def add(container):  # as the importer adds its items (items.create_item)
        item = createContent("News Item", id="planted", title="Planted")
        return addContentToContainer(container, item, checkConstraints=True)

    with api.env.adopt_user(username=USER):
        for container in (portal, folder):
            with pytest.raises(Unauthorized):
                add(container)
        assert add(portal["news"]).getId() == "planted"
    transaction.abort()


@pytest.mark.parametrize(
    "slug",
    ["../../elsewhere/planted", "/plone/elsewhere/planted", "..", "elsewhere/planted", "about"],
)
def test_a_post_claiming_another_path_lands_in_the_target_folder(
    portal,
    ghost,
    blog,
    elsewhere,
    slug,
):
    folder, document = elsewhere
    post = ghost_post(slug=slug, url=f"https://demo.ghost.io/{slug}/", title="Planted")
    blog.add(post)
    result, _ = deliver(ghost, POST_ID)
    assert result.state == "SUCCESS", result.result
    item = only_item(portal, ghost, POST_ID)
    assert item.aq_parent.getPhysicalPath() == ("", "plone", "news")
    assert list(folder.objectIds()) == []
    assert document.Title() != "Planted"
    assert "planted" not in portal.objectIds()
