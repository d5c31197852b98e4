"""The lease decision (``follow/leases.py`` ``plan``): which shards a replica claims and hands
back, from one snapshot of the state index. Pure: no Elasticsearch."""

from __future__ import annotations

from collections import Counter

import pytest

from es_embed.follow.leases import LeaseView, Plan, ShardKey, fair_share, plan

NOW = 1_000.0
LIVE = NOW + 30
SHARDS: list[ShardKey] = [("u", n) for n in range(4)]


def owned(owner: str, *shards: int, expires_at: float = LIVE) -> dict[ShardKey, LeaseView]:
    return {("u", n): LeaseView(owner, expires_at) for n in shards}


@pytest.mark.parametrize(
    ("shards", "replicas", "share"), [(4, 1, 4), (4, 2, 2), (4, 3, 2), (8, 3, 3), (0, 2, 0)]
)
def test_fair_share_is_the_ceiling(shards: int, replicas: int, share: int) -> None:
    assert fair_share(shards, replicas) == share


def test_a_lone_replica_claims_every_shard() -> None:
    decision = plan("a", SHARDS, {}, alive=["a"], held=set(), now=NOW)
    assert set(decision.claim) == set(SHARDS) and decision.release == ()


def test_a_second_live_heartbeat_halves_the_claim() -> None:
    decision = plan("a", SHARDS, {}, alive=["a", "b"], held=set(), now=NOW)
    assert len(decision.claim) == 2 and set(decision.claim) <= set(SHARDS)
    assert decision.release == ()


def test_an_even_split_stays_put() -> None:
    leases = {**owned("a", 0, 1), **owned("b", 2, 3)}
    held_a, held_b = {("u", 0), ("u", 1)}, {("u", 2), ("u", 3)}
    assert plan("a", SHARDS, leases, ["a", "b"], held_a, NOW) == Plan()
    assert plan("b", SHARDS, leases, ["a", "b"], held_b, NOW) == Plan()


def test_two_one_one_is_fair_enough_for_three_replicas() -> None:
    leases = {**owned("a", 0, 1), **owned("b", 2), **owned("c", 3)}
    alive = ["a", "b", "c"]
    assert plan("a", SHARDS, leases, alive, {("u", 0), ("u", 1)}, NOW) == Plan()
    assert plan("b", SHARDS, leases, alive, {("u", 2)}, NOW) == Plan()
    assert plan("c", SHARDS, leases, alive, {("u", 3)}, NOW) == Plan()


def test_a_replica_over_its_share_hands_back_its_whole_surplus() -> None:
    leases = owned("a", 0, 1, 2, 3)
    decision = plan("a", SHARDS, leases, ["a", "b"], set(SHARDS), NOW)
    assert decision.claim == () and len(decision.release) == 2  # surplus 2, all at once
    # The newcomer finds nothing free until then, and takes nothing owned.
    assert plan("b", SHARDS, leases, ["a", "b"], set(), NOW) == Plan()
    handed_back = {**leases, **{key: LeaseView(None, 0) for key in decision.release}}
    claim = plan("b", SHARDS, handed_back, ["a", "b"], set(), NOW).claim
    assert sorted(claim) == sorted(decision.release)


def test_only_the_busiest_gives_one_up_to_a_starved_replica() -> None:
    leases = {**owned("a", 0, 1), **owned("b", 2, 3)}
    alive = ["a", "b", "c"]  # c has nothing: 2, 2, 0 for a share of 2
    decision = plan("a", SHARDS, leases, alive, {("u", 0), ("u", 1)}, NOW)
    assert decision.claim == () and len(decision.release) == 1
    assert set(decision.release) <= {("u", 0), ("u", 1)}
    assert plan("b", SHARDS, leases, alive, {("u", 2), ("u", 3)}, NOW) == Plan()


def test_lapsed_leases_of_a_dead_replica_are_taken_over() -> None:
    leases = {**owned("a", 0, 1), **owned("dead", 2, 3, expires_at=NOW - 1)}
    decision = plan("a", SHARDS, leases, ["a"], {("u", 0), ("u", 1)}, NOW)
    assert set(decision.claim) == {("u", 2), ("u", 3)} and decision.release == ()


def test_a_live_lease_under_my_own_name_that_i_do_not_hold_is_free() -> None:
    # A replica restarted under a configured name takes its old leases back at once.
    decision = plan("a", SHARDS, owned("a", 0, 1, 2, 3), ["a"], set(), NOW)
    assert set(decision.claim) == set(SHARDS)


def test_live_leases_of_others_are_never_claimed() -> None:
    leases = owned("b", 0, 1, 2)
    decision = plan("a", SHARDS, leases, ["a", "b"], set(), NOW)
    assert decision == Plan(claim=(("u", 3),))


def _simulate(names: list[str], shards: list[ShardKey], held: dict[str, set[ShardKey]]) -> int:
    """Rounds, each replica in turn, until nobody moves; returns how many rounds it took."""
    for rounds in range(1, 20):
        moved = False
        for me in names:
            leases = {k: LeaseView(o, LIVE) for o, ks in held.items() for k in ks}
            decision = plan(me, shards, leases, names, held[me], NOW)
            held[me] -= set(decision.release)
            held[me] |= set(decision.claim)
            moved = moved or decision != Plan()
        if not moved:
            return rounds
    raise AssertionError(f"no steady state: {held}")


def test_eight_shards_spread_over_four_replicas_then_stay() -> None:
    shards: list[ShardKey] = [("u", n) for n in range(8)]
    names = ["a", "b", "c", "d"]
    held = {"a": set(shards), "b": set(), "c": set(), "d": set()}
    rounds = _simulate(names, shards, held)
    assert sorted(len(h) for h in held.values()) == [2, 2, 2, 2]
    assert set().union(*held.values()) == set(shards)
    assert rounds <= 2  # 8 -> 2 (all 6 handed back, claimed in the same round), a quiet one


def test_uneven_counts_settle_within_one() -> None:
    shards: list[ShardKey] = [("u", n) for n in range(7)]
    names = ["a", "b", "c"]
    held: dict[str, set[ShardKey]] = {"a": set(shards[:5]), "b": set(shards[5:]), "c": set()}
    _simulate(names, shards, held)
    assert Counter(len(h) for h in held.values()) == Counter({3: 1, 2: 2})
    assert sum(len(h) for h in held.values()) == 7
