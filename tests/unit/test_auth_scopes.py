"""Docker token scopes: parsed leniently from query values, formatted back for challenges."""

from __future__ import annotations

import pytest

from regsidecar.auth.scopes import MAX_SCOPES, Scope, format_scope, parse_scope, parse_scopes


def test_a_repository_scope_with_two_actions() -> None:
    assert parse_scope("repository:team/app:pull,push") == Scope(
        "repository", "team/app", frozenset({"pull", "push"})
    )


def test_several_parameters_and_space_separated_scopes_are_all_read_in_order() -> None:
    scopes = parse_scopes(["repository:a:pull repository:b:push", "repository:c:delete"])
    assert [s.name for s in scopes] == ["a", "b", "c"]


def test_a_repeated_scope_is_kept_once() -> None:
    assert len(parse_scopes(["repository:a:pull", "repository:a:pull"])) == 1


def test_a_resource_class_is_kept_and_formatted_back() -> None:
    scope = parse_scope("repository(plugin):vieux/sshfs:pull")
    assert scope is not None
    assert (scope.type, scope.resource_class) == ("repository", "plugin")
    assert str(scope) == "repository(plugin):vieux/sshfs:pull"


def test_the_catalog_scope() -> None:
    scope = parse_scope("registry:catalog:*")
    assert scope == Scope("registry", "catalog", frozenset({"*"}))
    assert str(scope) == "registry:catalog:*"


def test_star_on_a_repository_stands_for_every_action() -> None:
    scope = parse_scope("repository:a:*")
    assert scope is not None
    assert scope.expanded() == {"pull", "push", "delete"}


def test_unknown_actions_are_dropped_and_the_known_ones_kept() -> None:
    scope = parse_scope("repository:a:pull,fly")
    assert scope is not None
    assert scope.actions == {"pull"}


@pytest.mark.parametrize(
    "value",
    [
        "repository:a",  # no actions
        "repository:a:fly",  # no known action
        "repository:Team/App:pull",  # upper case is not a repository name
        "repository:../etc:pull",
        "repository:localhost:5000/a:pull",  # a host name is not part of the repository
        "repository::pull",
        "registry:other:*",
        "registry:catalog:pull",
        "registry(x):catalog:*",
        "image:a:pull",
        "repository(Plugin):a:pull",
        "",
    ],
)
def test_a_scope_this_registry_cannot_grant_is_ignored(value: str) -> None:
    assert parse_scope(value) is None
    assert parse_scopes([value, "repository:ok:pull"]) == [parse_scope("repository:ok:pull")]


def test_one_request_is_answered_for_a_bounded_number_of_scopes() -> None:
    values = [f"repository:r{i}:pull" for i in range(MAX_SCOPES + 10)]
    assert len(parse_scopes(values)) == MAX_SCOPES


def test_actions_are_formatted_in_a_stable_order() -> None:
    assert format_scope("team/app", ["push", "pull"]) == "repository:team/app:pull,push"
    assert str(parse_scope("repository:a:delete,push,pull")) == "repository:a:pull,push,delete"
