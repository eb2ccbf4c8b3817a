"""Who may see and change what: the permission rules the REST API and the pages share.

XNAT's project roles (owner, member, collaborator) and accessibility (private, protected,
public), as ``xnat-rest-api.md`` §3 describes them.  Site admins may do everything.
"""

from __future__ import annotations

from minixnat.store import Project, Store, User


class Access:
    """What a user may see and do.  ``user`` is None for an anonymous guest."""

    def __init__(self, store: Store, user: User | None) -> None:
        self.store = store
        self.user = user

    @property
    def is_admin(self) -> bool:
        return bool(self.user and self.user.admin)

    def role(self, project: Project) -> str | None:
        if self.user is None:
            return None
        return self.store.role_of(project.id, self.user.login)

    def can_see(self, project: Project) -> bool:
        """Listed and describable (protected projects are visible to logged-in users)."""
        if self.can_read(project):
            return True
        return project.accessibility == "protected" and self.user is not None

    def can_read(self, project: Project) -> bool:
        if self.is_admin or project.accessibility == "public":
            return True
        return self.role(project) is not None

    def readable_project_ids(self) -> list[str]:
        """The IDs of every project this user may read, in the store's order."""
        return [p.id for p in self.store.list_projects() if self.can_read(p)]

    def can_edit(self, project: Project) -> bool:
        return self.is_admin or self.role(project) in ("owner", "member")

    def can_delete(self, project: Project) -> bool:
        return self.is_admin or self.role(project) == "owner"
