"""A query cost limit: reject operations that would resolve too many fields.

Cost = the number of fields an operation resolves, assuming list fields return as many
items as their ``first``/``last``/``limit`` argument asks (1 when absent): a field costs
1, plus its children's cost times its list size. Fragments are expanded (and their cost
memoised, so a document cannot blow up the estimate itself). Variables are read from
the request, then from their defaults. The check is a validation rule, so an operation
over the limit is never executed.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    InlineFragmentNode,
    IntValueNode,
    OperationDefinitionNode,
    SelectionSetNode,
    ValidationRule,
    ValueNode,
    VariableNode,
)
from strawberry.extensions import SchemaExtension

LIST_SIZE_ARGUMENTS = ("first", "last", "limit")
# Deeper nesting than any allowed depth limit; stops recursion on hostile documents.
MAX_NESTING = 256
COST_ERROR_CODE = "query_too_costly"


class CostEstimator:
    """Estimates one operation's cost (fragment costs depend on its variables)."""

    def __init__(
        self,
        fragments: Mapping[str, FragmentDefinitionNode],
        variables: Mapping[str, Any],
        list_arguments: Sequence[str] = LIST_SIZE_ARGUMENTS,
    ) -> None:
        self.fragments = fragments
        self.variables = variables
        self.list_arguments = frozenset(list_arguments)
        self._fragment_costs: dict[str, int] = {}
        self._expanding: set[str] = set()

    def cost(self, operation: OperationDefinitionNode) -> int:
        return self._selection_cost(operation.selection_set, 0)

    def _selection_cost(self, selection_set: SelectionSetNode | None, depth: int) -> int:
        if selection_set is None:
            return 0
        if depth > MAX_NESTING:
            raise RecursionError(f"selections nested deeper than {MAX_NESTING} levels")
        total = 0
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                children = self._selection_cost(selection.selection_set, depth + 1)
                total += 1 + self._list_size(selection) * children
            elif isinstance(selection, InlineFragmentNode):
                total += self._selection_cost(selection.selection_set, depth + 1)
            elif isinstance(selection, FragmentSpreadNode):
                total += self._fragment_cost(selection.name.value, depth + 1)
        return total

    def _fragment_cost(self, name: str, depth: int) -> int:
        if name in self._fragment_costs:
            return self._fragment_costs[name]
        fragment = self.fragments.get(name)
        # Unknown and cyclic fragments are reported by the standard rules.
        if fragment is None or name in self._expanding:
            return 0
        self._expanding.add(name)
        try:
            cost = self._selection_cost(fragment.selection_set, depth)
        finally:
            self._expanding.discard(name)
        self._fragment_costs[name] = cost
        return cost

    def _list_size(self, field: FieldNode) -> int:
        sizes = [
            self._int_value(argument.value)
            for argument in field.arguments or ()
            if argument.name.value in self.list_arguments
        ]
        return max([1, *(size for size in sizes if size is not None)])

    def _int_value(self, value: ValueNode) -> int | None:
        if isinstance(value, IntValueNode):
            return int(value.value)
        if isinstance(value, VariableNode):
            given = self.variables.get(value.name.value)
            if isinstance(given, int) and not isinstance(given, bool):
                return given
        return None


def estimate_cost(
    document: DocumentNode, operation: OperationDefinitionNode, variables: Mapping[str, Any]
) -> int:
    """The cost of ``operation``; raises ``RecursionError`` past ``MAX_NESTING`` levels."""
    fragments = {
        d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
    }
    values = dict(variables)
    for definition in operation.variable_definitions or ():
        name = definition.variable.name.value
        if name not in values and isinstance(definition.default_value, IntValueNode):
            values[name] = int(definition.default_value.value)
    return CostEstimator(fragments, values).cost(operation)


def cost_rule(max_cost: int, variables: Mapping[str, Any]) -> type[ValidationRule]:
    """A validation rule class bound to one request's variables."""

    class QueryCostRule(ValidationRule):
        def enter_document(self, node: DocumentNode, *_args: Any) -> None:
            for operation in node.definitions:
                if not isinstance(operation, OperationDefinitionNode):
                    continue
                name = operation.name.value if operation.name else "anonymous"
                try:
                    cost = estimate_cost(node, operation, variables)
                except RecursionError:
                    self.report_error(GraphQLError(f"'{name}' is nested too deeply.", operation))
                    continue
                if cost > max_cost:
                    self.report_error(
                        GraphQLError(
                            f"'{name}' has a cost of {cost}, above the maximum of {max_cost}; "
                            "ask for fewer fields or smaller pages (first/last/limit).",
                            operation,
                            extensions={
                                "code": COST_ERROR_CODE,
                                "cost": cost,
                                "maxCost": max_cost,
                            },
                        )
                    )

    return QueryCostRule


class QueryCostLimiter(SchemaExtension):
    """Adds the cost rule, with this request's variables, to the validation rules."""

    def __init__(self, *, max_cost: int) -> None:
        self.max_cost = max_cost

    def on_operation(self) -> Iterator[None]:
        context = self.execution_context
        rule = cost_rule(self.max_cost, context.variables or {})
        context.validation_rules = (*context.validation_rules, rule)
        yield
