"""How a batch's items form groups: the three grouping policies, the group
size, and the bound on groups still filling (at it nothing is sealed early;
one key past it the fullest open group is). The Grouper is driven directly;
one batch per policy goes through a real server as well."""

from __future__ import annotations

import pytest

from paygrid.v1 import batch_service_pb2 as pb
from paygrid_server.domain.model import limits
from paygrid_server.domain.model.batch import BatchItem, GroupingPolicy
from paygrid_server.domain.batches.grouping import Grouper, group_key
from paygrid_server.domain.model.money import Money
from tests.support.batch_client import batch_stub, chunk, header, submit, tx


def item(seq: int, channel: str = "card", currency: str = "EUR", payee: str = "p1") -> BatchItem:
    return BatchItem(seq=seq, reference=f"r{seq}", payee=payee, amount=Money(currency, 100),
                     requested_channel="", requested_at_us=None, channel=channel)


@pytest.mark.parametrize("policy, key", [
    (GroupingPolicy.CHANNEL_AND_CURRENCY, "card/EUR"),
    (GroupingPolicy.CHANNEL, "card"),
    (GroupingPolicy.CHANNEL_CURRENCY_AND_PAYEE, "card/EUR/p1"),
])
def test_each_policy_has_its_key(policy, key) -> None:
    assert group_key(policy, item(1)) == key


def contents(groups) -> list[tuple[int, str, list[int]]]:
    return [(g.group_no, g.key, [i.seq for i in g.items]) for g in groups]


def feed(grouper: Grouper, items: list[BatchItem]) -> list:
    sealed = []
    for each in items:
        sealed += grouper.add(each)
    return sealed


MIXED = [item(1), item(2, currency="USD"), item(3, payee="p2"), item(4, channel="wallet"),
         item(5), item(6, currency="USD", payee="p2")]


@pytest.mark.parametrize("policy, expected", [
    (GroupingPolicy.CHANNEL_AND_CURRENCY,
     [(1, "card/EUR", [1, 3, 5]), (2, "card/USD", [2, 6]), (3, "wallet/EUR", [4])]),
    (GroupingPolicy.CHANNEL, [(1, "card", [1, 2, 3, 5, 6]), (2, "wallet", [4])]),
    (GroupingPolicy.CHANNEL_CURRENCY_AND_PAYEE,
     [(1, "card/EUR/p1", [1, 5]), (2, "card/USD/p1", [2]), (3, "card/EUR/p2", [3]),
      (4, "wallet/EUR/p1", [4]), (5, "card/USD/p2", [6])]),
])
def test_each_policy_gathers_its_own_items(policy, expected) -> None:
    grouper = Grouper(policy, max_group_size=10, next_group_no=1)
    assert feed(grouper, MIXED) == []
    assert contents(grouper.seal_all()) == expected
    assert grouper.seal_all() == []  # sealed once


def test_a_group_is_sealed_exactly_when_full_and_numbers_go_on() -> None:
    grouper = Grouper(GroupingPolicy.CHANNEL, max_group_size=3, next_group_no=7)
    assert feed(grouper, [item(1), item(2)]) == []
    assert contents(grouper.add(item(3))) == [(7, "card", [1, 2, 3])]
    assert feed(grouper, [item(4), item(5)]) == []
    assert contents(grouper.add(item(6))) == [(8, "card", [4, 5, 6])]
    assert grouper.add(item(7)) == []
    assert contents(grouper.seal_all()) == [(9, "card", [7])]


def test_groups_of_one_and_of_the_largest_size() -> None:
    one = Grouper(GroupingPolicy.CHANNEL, max_group_size=1, next_group_no=1)
    assert contents(one.add(item(1))) == [(1, "card", [1])]
    largest = Grouper(GroupingPolicy.CHANNEL, max_group_size=limits.BATCH_MAX_GROUP_SIZE,
                      next_group_no=1)
    size = limits.BATCH_MAX_GROUP_SIZE
    assert feed(largest, [item(i) for i in range(1, size)]) == []
    [group] = largest.add(item(size))
    assert len(group.items) == size


def open_keys(count: int, first_seq: int = 1) -> list[BatchItem]:
    return [item(first_seq + n, payee=f"p{n}") for n in range(count)]


def test_64_groups_may_fill_at_once_and_a_65th_key_seals_the_fullest() -> None:
    assert limits.BATCH_MAX_OPEN_GROUPS == 64
    grouper = Grouper(GroupingPolicy.CHANNEL_CURRENCY_AND_PAYEE, max_group_size=10,
                      next_group_no=1)
    assert feed(grouper, open_keys(64)) == []  # exactly at the bound: nothing sealed early
    # p5's group is the fullest (two items); an item for an open key seals nothing.
    assert grouper.add(item(100, payee="p5")) == []
    sealed = grouper.add(item(101, payee="new"))  # one key past the bound
    assert contents(sealed) == [(1, "card/EUR/p5", [6, 100])]
    # The newcomer took the freed place: still 64 open, so another new key
    # seals one more (the first of the equally full ones).
    assert contents(grouper.add(item(102, payee="newer"))) == [(2, "card/EUR/p0", [1])]
    rest = grouper.seal_all()
    assert len(rest) == 64
    assert [g.group_no for g in rest] == list(range(3, 67))


def test_an_early_seal_and_a_full_group_in_one_add() -> None:
    grouper = Grouper(GroupingPolicy.CHANNEL_CURRENCY_AND_PAYEE, max_group_size=1,
                      next_group_no=1)
    # Groups of one never stay open, so the bound never bites.
    assert all(len(grouper.add(each)) == 1 for each in open_keys(100))
    two = Grouper(GroupingPolicy.CHANNEL_CURRENCY_AND_PAYEE, max_group_size=2, next_group_no=1)
    feed(two, open_keys(64))
    two.add(item(200, payee="p3"))  # seals p3's full group: 63 open
    assert two.add(item(201, payee="x")) == []  # 64 open again, at the bound
    assert contents(two.add(item(202, payee="y"))) == [(2, "card/EUR/p0", [1])]


@pytest.mark.parametrize("grouping, expected_keys", [
    (pb.GROUPING_POLICY_CHANNEL, {("card", 3)}),
    (pb.GROUPING_POLICY_CHANNEL_CURRENCY_AND_PAYEE,
     {("card/EUR/alice", 2), ("card/USD/alice", 1)}),
    (pb.GROUPING_POLICY_CHANNEL_AND_CURRENCY, {("card/EUR", 2), ("card/USD", 1)}),
])
async def test_a_real_batch_is_grouped_by_its_policy(paygrid, grouping, expected_keys) -> None:
    reply = await submit(batch_stub(paygrid.channel), header("grouped", grouping=grouping),
                         chunk(tx("a", payee="alice", channel="card"),
                               tx("b", payee="alice", currency="USD", channel="card"),
                               tx("c", payee="alice", channel="card")))
    assert reply.summary.status == pb.BATCH_STATUS_COMPLETED
    assert {(g.group_key, len(g.items)) for g in reply.groups} == expected_keys
