"""Trigger tasks showing retries, skipping, kwargs validation and error
context (used by the "Writing tasks" page)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import filters as f

from triggers.exceptions import with_context
from triggers.task import TaskContext, TriggerTask


class GatewayUnavailable(Exception):
    """The payment provider did not answer; trying later may work."""


class CardDeclined(Exception):
    """The payment provider refused the card; retrying will not help."""


class FakeGateway:
    """Stands in for a payment provider's client."""

    def __init__(self) -> None:
        self.outages = 0  # how many of the next calls time out
        self.declined: set[str] = set()  # order ids whose card is refused

    def charge(self, order_id: str, amount: Decimal) -> str:
        if self.outages:
            self.outages -= 1
            raise GatewayUnavailable("timed out")
        if order_id in self.declined:
            raise CardDeclined("insufficient funds")
        return f"ch-{order_id}-{amount}"


gateway = FakeGateway()


class ChargeCustomer(TriggerTask):
    """Charges an order; retried (as a new instance) while the gateway is down."""

    max_retries = 2  # at most two clones: three attempts in all

    def _run(self, context: TaskContext) -> dict[str, Any]:
        # Check and convert the kwargs before acting on them. Invalid input
        # fails the instance with the filters' messages.
        cleaned = context.filter_kwargs(
            {
                "orderPlaced": {
                    "orderId": f.Required | f.Unicode | f.Strip,
                    "amount": f.Required | f.Decimal | f.Min(Decimal(0)),
                },
            }
        )
        order = cleaned["orderPlaced"]
        if order["amount"] == 0:
            # Nothing to do: resolved, but no cascade.
            raise self.skip(metadata={"reason": "free order"})
        try:
            charge_id = gateway.charge(order["orderId"], order["amount"])
        except GatewayUnavailable as exc:
            # This instance becomes 'replayed' and a clone runs after the
            # cooldown; past max_retries the instance fails instead.
            raise self.retry(exc=exc, cooldown=0.2) from exc
        except CardDeclined as exc:
            # Fails the instance; the context is stored with it and logged.
            raise with_context(exc, {"orderId": order["orderId"]}) from None
        return {"chargeId": charge_id, "amount": str(order["amount"])}
