"""Secret: the Mithril platform's SDK (flow-compute) way to give a function's task a secret.

    @app.function(instance_type="a100", secrets=[flow.Secret.from_env("WANDB_API_KEY")])

`Secret.from_env(NAME)` is TaskConfig's `secret_env=[NAME]`: the value is read from the
submitter's environment when the task is submitted, given to the task, and never stored with its
config, listed or logged. (flow-compute copies it into the task's plain `env`.) Its other two
sources are refused: `from_name` reads a secret store this project does not have, and
`from_dict` would put secret values into the task's config.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from flow.errors import ProviderCapabilityError, ValidationError
from flow.runtime.runner import IMPORTING_ENV


@attrs.frozen
class Secret:
    """An environment variable whose value the task gets from the submitter's environment."""

    env_var: str
    required: bool = True

    @classmethod
    def from_env(cls, env_var: str, required: bool = True) -> Secret:
        """The variable `env_var` of this environment. Unset: refused now when `required`,
        else left out of the task."""
        # While a task imports the user's module (to call a function in it), this may name a
        # variable that only another function's task gets.
        if required and not os.environ.get(env_var) and not os.environ.get(IMPORTING_ENV):
            raise ValidationError(
                f"Secret.from_env({env_var!r}): {env_var} is not set in this environment",
                suggestions=[
                    f"export {env_var}=... before running this",
                    f"or Secret.from_env({env_var!r}, required=False) to run without it",
                ],
            )
        return cls(env_var=env_var, required=required)

    @classmethod
    def from_name(cls, name: str, env_var: str | None = None) -> Secret:
        """Refused: there is no secret store here."""
        shown = env_var or name.upper().replace("-", "_")
        raise ProviderCapabilityError(
            f"Secret.from_name({name!r}): there is no secret store here",
            suggestions=[f"export {shown}=... where you submit, and use Secret.from_env({shown!r})"],
        )

    @classmethod
    def from_dict(cls, env_vars: Mapping[str, str], name: str | None = None) -> Secret:
        """Refused: values written in code would be stored with the task's config."""
        names = ", ".join(sorted(env_vars)) or "NAME"
        raise ProviderCapabilityError(
            f"Secret.from_dict({{{names}: ...}}): secret values given in code would be stored with the task",
            suggestions=[
                "export each one where you submit and use Secret.from_env(NAME)",
                "values that are not secret go in env={...}",
            ],
        )


def secret_env_of(secrets: object) -> tuple[str, ...]:
    """The secret_env names of `@app.function(secrets=[...])`: every required Secret's, and the
    optional ones set in this environment."""
    if not isinstance(secrets, Iterable) or isinstance(secrets, str | Mapping):
        raise ValidationError(
            f"secrets={secrets!r} is not a list of Secrets",
            suggestions=["give e.g. secrets=[flow.Secret.from_env('WANDB_API_KEY')]"],
        )
    names: list[str] = []
    for i, secret in enumerate(secrets):
        if not isinstance(secret, Secret):
            raise ValidationError(
                f"secrets[{i}]={secret!r} is not a Secret",
                suggestions=["make it with flow.Secret.from_env('NAME')"],
            )
        if secret.required or os.environ.get(secret.env_var):
            names.append(secret.env_var)
    return tuple(names)


def with_secrets(options: dict[str, Any]) -> dict[str, Any]:
    """Task options with `secrets=[...]` turned into secret_env (added to any it has)."""
    if "secrets" not in options:
        return options
    rest = dict(options)
    secrets = rest.pop("secrets")
    if secrets is None:  # flow-compute's default
        return rest
    named = secret_env_of(secrets)
    rest["secret_env"] = (*rest.get("secret_env", ()), *named)
    return rest


__all__ = ["Secret", "secret_env_of", "with_secrets"]
