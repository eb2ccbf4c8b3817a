"""Users and project membership: ``/data/users`` and ``/data/projects/{P}/users``.

As XNAT 1.8: the site's users with ``login``, names, ``email`` and ``xdat_user_id``; a
project's users with their group (``displayname`` Owners, Members or Collaborators and
``GROUP_ID`` ``{P}_owner`` …).  ``PUT``/``DELETE …/users/{group}/{login}`` changes membership,
where the group is the display name or the group id; only the project's owners (and site
admins) may.  A project the caller cannot see is a 404, as everywhere.
"""

from __future__ import annotations

import json

from minixnat.http.access import Access
from minixnat.http.messages import AnyResponse, HttpError, Request, Response, text
from minixnat.rest.tables import Table, apply_query, render
from minixnat.store import Project, Store, User

USER_COLUMNS = ["login", "firstname", "lastname", "email", "enabled", "xdat_user_id"]
GROUPS = {"owner": "Owners", "member": "Members", "collaborator": "Collaborators"}
MEMBER_COLUMNS = ["login", "firstname", "lastname", "email", "displayname", "GROUP_ID", "ID"]


def _user_row(user: User) -> dict[str, str]:
    return {
        "login": user.login,
        "firstname": user.firstname,
        "lastname": user.lastname,
        "email": user.email,
        "enabled": "true" if user.enabled else "false",
        "xdat_user_id": str(user.id),
    }


def site_users(store: Store, request: Request, login: str | None) -> Response:
    """``/data/users[/{login}]``: every user (or one), for any logged-in user, as XNAT."""
    users = store.list_users()
    if login is not None:
        users = [u for u in users if u.login == login]
        if not users:
            raise HttpError(404, f"No user {login}.")
    table = Table(USER_COLUMNS, [_user_row(u) for u in users])
    return render(apply_query(table, request), request)


def project_roles(store: Store, user: User | None) -> Response:
    """``/xapi/access/projects``: the projects the caller has a role in (a site admin's other
    projects are not among them, nor a guest's public ones), as XNAT lists its groups."""
    rows = []
    for pid, role in store.roles_of(user.login) if user is not None else []:
        project = store.get_project(pid)
        if project is None:
            continue
        rows.append(
            {
                "secondary_ID": project.secondary_id,
                "ID": project.id,
                "role": GROUPS.get(role, role),
                "name": project.name,
                "URI": f"/data/projects/{project.id}",
                "group_id": f"{project.id}_{role}",
                "description": project.description,
            }
        )
    rows.sort(key=lambda row: (row["secondary_ID"], row["ID"]))
    return Response(200, json.dumps(rows).encode(), "application/json")


def xapi_users(store: Store, login: str | None) -> Response:
    """``/xapi/users`` (the logins) and ``/xapi/users/{login}`` (one user's record)."""
    if login is None:
        body: object = [u.login for u in store.list_users()]
    else:
        user = store.get_user(login)
        if user is None:
            raise HttpError(404, f"No user {login}.")
        body = {
            "username": user.login,
            "firstName": user.firstname,
            "lastName": user.lastname,
            "email": user.email,
            "enabled": user.enabled,
            "id": user.id,
            "admin": user.admin,
        }
    return Response(200, json.dumps(body).encode(), "application/json")


def _project(store: Store, access: Access, ref: str) -> Project:
    project = store.get_project(ref)
    if project is None or not access.can_see(project):
        raise HttpError(404, f"Unable to identify project {ref}.")
    return project


def project_users(store: Store, access: Access, request: Request, ref: str) -> Response:
    project = _project(store, access, ref)
    if not access.can_read(project):
        raise HttpError(403, f"Unable to read the users of project {project.id}.")
    rows = []
    for user, role in store.project_members(project.id):
        rows.append(
            {
                **_user_row(user),
                "displayname": GROUPS[role],
                "GROUP_ID": f"{project.id}_{role}",
                "ID": str(user.id),
            }
        )
    return render(apply_query(Table(MEMBER_COLUMNS, rows), request), request)


def _role_of_group(project: Project, group: str) -> str:
    for role, display in GROUPS.items():
        if group.lower() in (display.lower(), role, f"{project.id}_{role}".lower()):
            return role
    raise HttpError(
        404, f"No group {group!r} in project {project.id}: use Owners, Members or Collaborators."
    )


def change_membership(
    store: Store, access: Access, request: Request, ref: str, group: str, login: str
) -> AnyResponse:
    """``PUT`` or ``DELETE /data/projects/{P}/users/{group}/{login}``."""
    if access.user is None:
        raise HttpError(401, "Log in to change project membership.")
    project = _project(store, access, ref)
    if not access.can_delete(project):  # owners and admins
        raise HttpError(403, f"Only owners of project {project.id} may change its users.")
    role = _role_of_group(project, group)
    if store.get_user(login) is None:
        raise HttpError(404, f"No user {login}.")
    if request.method == "PUT":
        store.set_role(project.id, login, role)
        return text("")
    if request.method == "DELETE":
        if store.role_of(project.id, login) != role:
            raise HttpError(404, f"{login} is not in the {GROUPS[role]} of {project.id}.")
        store.remove_role(project.id, login)
        return text("")
    raise HttpError(405, "PUT adds a user to the group; DELETE removes them.")
