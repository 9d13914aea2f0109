"""The import-linter contract type the built-in ones lack: "may import only", an allow-list.

    [[tool.importlinter.contracts]]
    name = "flowd may import only ..."
    type = "allowed_imports"
    source_modules = ["flowd"]
    allowed_modules = ["flow.domain", "flow.home"]
    only_within = ["flow"]     # optional: judge only imports of these packages
    standard_library = true    # optional: the standard library is allowed as well

Every direct import made by a source module (or a module inside one) must be of an allowed module
(or one inside it), of the sources themselves or, with `standard_library`, of the standard
library. So a module that appears tomorrow is covered the day it appears, which a "forbidden"
list of today's modules is not. Registered in pyproject.toml (`contract_types`); lint-imports
runs from the repository root, where `tools` is importable.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any, cast

import grimp
from importlinter import Contract, ContractCheck, fields, output
from importlinter.domain.imports import Module


def _inside(module: str, packages: Iterable[str]) -> bool:
    return any(module == package or module.startswith(package + ".") for package in packages)


class AllowedImportsContract(Contract):
    type_name = "allowed_imports"

    source_modules = fields.ListField(subfield=fields.ModuleField())
    allowed_modules = fields.ListField(subfield=fields.ModuleField())
    only_within = fields.ListField(subfield=fields.ModuleField(), required=False)
    standard_library = fields.BooleanField(required=False, default=False)

    def check(self, graph: grimp.ImportGraph, verbose: bool) -> ContractCheck:
        # The fields hold parsed values once the contract is built (import-linter's own contracts
        # read them the same way).
        sources = [m.name for m in cast("list[Module]", self.source_modules)]
        allowed = [*sources, *(m.name for m in cast("list[Module]", self.allowed_modules))]
        scope = [m.name for m in cast("list[Module] | None", self.only_within) or []]
        stdlib: frozenset[str] = sys.stdlib_module_names if self.standard_library else frozenset()
        illegal: list[dict[str, Any]] = []
        for source in sources:
            for importer in sorted({source} | graph.find_descendants(source)):
                for imported in sorted(graph.find_modules_directly_imported_by(importer)):
                    if (scope and not _inside(imported, scope)) or _inside(imported, allowed):
                        continue
                    if imported.split(".")[0] in stdlib:
                        continue
                    details = graph.get_import_details(importer=importer, imported=imported)
                    lines = sorted({detail["line_number"] for detail in details})
                    illegal.append({"importer": importer, "imported": imported, "line_numbers": lines})
        return ContractCheck(kept=not illegal, metadata={"illegal_imports": illegal})

    def render_broken_contract(self, check: ContractCheck) -> None:
        output.print_error("Imports outside the allow-list:", bold=False)
        output.new_line()
        for found in check.metadata["illegal_imports"]:
            lines = ", ".join(map(str, found["line_numbers"]))
            output.print_error(f"- {found['importer']} -> {found['imported']} (l.{lines})", bold=False)
            output.new_line()


__all__ = ["AllowedImportsContract"]
