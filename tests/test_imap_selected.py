"""One session's view of its selected mailbox (selected.py): sequence numbers, pending
expunges, new messages and other sessions' flag changes (RFC 3501 §2.3.1.2, §7.4.1).

Pure: the store's change feed is given as the dicts ``Store.mailbox_changes`` returns.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from mailbox_appliance.imap.replies import IMAPError
from mailbox_appliance.imap.selected import SelectedMailbox
from mailbox_appliance.imap.sequence import SequenceSet

SEEN, FLAGGED, DELETED = 1, 4, 8


def _box(uids, *, first_recent: int = 10**9, modseq: int = 5) -> SelectedMailbox:
    return SelectedMailbox(
        {
            "id": 1,
            "name": "INBOX",
            "uidvalidity": 7,
            "uidnext": (max(uids) + 1) if uids else 1,
            "highestmodseq": modseq,
            "first_recent": first_recent,
            "entries": [(uid, 0, "", modseq) for uid in uids],
            "sizes": [1000 + uid for uid in uids],
        },
        read_only=False,
    )


def _changes(*, changed=(), expunged=(), highestmodseq: int = 6, uidnext: int = 1) -> dict:
    return {
        "highestmodseq": highestmodseq,
        "uidnext": uidnext,
        "exists": True,
        "changed": list(changed),
        "sizes": [1000 + entry[0] for entry in changed],
        "expunged": list(expunged),
    }


def _client_view(uids: list[int], expunges: list[int]) -> list[int]:
    """What a client holds after applying ``* n EXPUNGE`` responses in order."""
    uids = list(uids)
    for n in expunges:
        assert 1 <= n <= len(uids), (n, uids)  # each number valid when it is sent
        del uids[n - 1]
    return uids


class ExpungeNumbersTests(SynchronousTestCase):
    def test_several_expunged_at_once_are_numbered_as_of_when_each_is_sent(self):
        box = _box(list(range(1, 11)))
        updates = box.apply(_changes(expunged=[3, 4, 8]), allow_expunge=True)
        self.assertEqual(updates.expunged, [3, 3, 6])
        self.assertEqual(box.uids, [1, 2, 5, 6, 7, 9, 10])
        self.assertEqual(box.exists, 7)
        self.assertEqual(sorted(box.flags), box.uids)
        self.assertEqual(sorted(box.sizes), box.uids)
        self.assertEqual(sorted(box.modseqs), box.uids)

    def test_the_example_of_rfc_3501_section_7_4_1(self):
        """Expunging messages 3, 4, 7 and 11 of 11 sends 3, 3, 5, 8."""
        box = _box(list(range(1, 12)))
        self.assertEqual(box.expunged_by_us([11, 7, 4, 3]), [3, 3, 5, 8])

    def test_expunge_numbers_with_sparse_uids_leave_the_client_in_step(self):
        uids = [10, 20, 30, 40, 50, 60]
        box = _box(uids)
        numbers = box.apply(_changes(expunged=[60, 20, 10, 40]), allow_expunge=True).expunged
        self.assertEqual(numbers, [1, 1, 2, 3])
        self.assertEqual(_client_view(uids, numbers), box.uids)
        self.assertEqual(box.uids, [30, 50])

    def test_expunging_everything_sends_one_every_time(self):
        box = _box([1, 2, 3, 4])
        self.assertEqual(box.expunged_by_us([1, 2, 3, 4]), [1, 1, 1, 1])
        self.assertEqual((box.uids, box.exists, box.max_uid), ([], 0, 0))

    def test_our_own_expunge_ignores_uids_we_do_not_hold(self):
        box = _box([1, 2, 3])
        self.assertEqual(box.expunged_by_us([2, 99]), [2])
        self.assertEqual(box.uids, [1, 3])

    def test_an_expunged_recent_message_is_no_longer_recent(self):
        box = _box([1, 2, 3], first_recent=2)
        self.assertEqual(box.recent, {2, 3})
        box.expunged_by_us([2])
        self.assertEqual(box.recent, {3})
        self.assertEqual(box.flag_list(3), ["\\Recent"])


class DeferredExpungeTests(SynchronousTestCase):
    """RFC 3501 §7.4.1: no EXPUNGE during FETCH, STORE or SEARCH; numbers stay put."""

    def test_an_expunge_that_may_not_be_sent_keeps_the_numbers(self):
        box = _box([1, 2, 3, 4])
        updates = box.apply(_changes(expunged=[2]), allow_expunge=False)
        self.assertEqual((updates.expunged, updates.exists, updates.flags), ([], None, []))
        self.assertEqual(box.uids, [1, 2, 3, 4])
        self.assertEqual(box.seq_of(3), 3)
        self.assertEqual(box.uids_for(SequenceSet.parse("2:*"), uid=False), [2, 3, 4])
        self.assertEqual(box.gone, {2})

    def test_a_deferred_expunge_is_reported_at_the_next_chance(self):
        box = _box([1, 2, 3, 4])
        box.apply(_changes(expunged=[2, 4]), allow_expunge=False)
        updates = box.apply(_changes(), allow_expunge=True)
        self.assertEqual(updates.expunged, [2, 3])
        self.assertEqual((box.uids, box.gone), ([1, 3], set()))
        # ... and only once
        self.assertEqual(box.apply(_changes(), allow_expunge=True).expunged, [])

    def test_flag_changes_of_a_message_waiting_to_be_expunged_are_not_reported(self):
        box = _box([1, 2, 3])
        box.apply(_changes(expunged=[2]), allow_expunge=False)
        updates = box.apply(_changes(changed=[(2, SEEN, "", 7)]), allow_expunge=False)
        self.assertEqual(updates.flags, [])

    def test_exists_counts_messages_waiting_to_be_expunged(self):
        """EXISTS may not shrink without EXPUNGE (RFC 3501 §7.3.1)."""
        box = _box([1, 2, 3])
        updates = box.apply(_changes(expunged=[2], changed=[(4, 0, "", 7)]), allow_expunge=False)
        self.assertEqual((updates.expunged, updates.exists), ([], 4))
        updates = box.apply(_changes(), allow_expunge=True)
        self.assertEqual((updates.expunged, updates.exists), ([2], None))
        self.assertEqual(box.uids, [1, 3, 4])

    def test_expunges_are_numbered_before_new_messages_are_counted(self):
        box = _box([1, 2, 3])
        updates = box.apply(
            _changes(expunged=[1], changed=[(4, 0, "", 7), (5, 0, "", 8)]), allow_expunge=True
        )
        self.assertEqual((updates.expunged, updates.exists), ([1], 4))
        self.assertEqual(box.uids, [2, 3, 4, 5])


class NewMessagesAndFlagsTests(SynchronousTestCase):
    def test_new_messages_give_exists(self):
        box = _box([1, 2])
        updates = box.apply(
            _changes(changed=[(3, 0, "", 6), (4, SEEN, "", 6)], uidnext=5), allow_expunge=True
        )
        self.assertEqual((updates.exists, updates.flags), (4, []))
        self.assertEqual(box.uids, [1, 2, 3, 4])
        self.assertEqual(box.flag_list(4), ["\\Seen"])
        self.assertEqual(box.sizes, {1: 1001, 2: 1002, 3: 1003, 4: 1004})
        self.assertEqual((box.uidnext, box.highestmodseq), (5, 6))

    def test_new_messages_in_an_empty_mailbox_give_exists(self):
        box = _box([])
        updates = box.apply(_changes(changed=[(1, 0, "", 6)]), allow_expunge=False)
        self.assertEqual((updates.exists, box.uids), (1, [1]))

    def test_nothing_new_gives_no_exists(self):
        box = _box([1, 2])
        self.assertIsNone(box.apply(_changes(), allow_expunge=True).exists)

    def test_another_sessions_flag_change_is_reported_once(self):
        box = _box([1, 2, 3])
        updates = box.apply(_changes(changed=[(2, SEEN, "$Junk", 6)]), allow_expunge=True)
        self.assertEqual(updates.flags, [2])
        self.assertEqual(box.flag_list(2), ["\\Seen", "$Junk"])
        self.assertEqual(box.modseqs[2], 6)
        # The same state again (a later feed that includes it): nothing new to say.
        again = box.apply(_changes(changed=[(2, SEEN, "$Junk", 6)]), allow_expunge=True)
        self.assertEqual(again.flags, [])

    def test_our_own_flag_change_is_not_reported_again(self):
        box = _box([1, 2, 3])
        box.note_flags([(3, FLAGGED, "", 6)])
        updates = box.apply(_changes(changed=[(3, FLAGGED, "", 6)]), allow_expunge=True)
        self.assertEqual(updates.flags, [])
        self.assertEqual(box.flag_list(3), ["\\Flagged"])

    def test_known_flags_lists_system_flags_and_keywords_in_use(self):
        box = _box([1, 2])
        box.note_flags([(1, 0, "b a", 6), (2, 0, "a", 6)])
        self.assertEqual(
            box.known_flags(),
            ["\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft", "a", "b"],
        )

    def test_unseen_first_is_the_first_message_without_seen(self):
        box = _box([4, 5, 6])
        box.note_flags([(4, SEEN, "", 6), (6, SEEN, "", 6)])
        self.assertEqual(box.unseen_first(), 2)
        box.note_flags([(5, SEEN, "", 7)])
        self.assertIsNone(box.unseen_first())


class SequenceSetTests(SynchronousTestCase):
    """``*`` is the largest number in use (RFC 3501 §9 seq-number, §6.4.8)."""

    def test_star_in_an_empty_mailbox_is_bad_as_a_message_number(self):
        """RFC 3501 §9 seq-number: ``*`` in an empty mailbox names no message."""
        box = _box([])
        for text in ("*", "1:*", "*:4"):
            with self.assertRaises(IMAPError) as caught:
                box.uids_for(SequenceSet.parse(text), uid=False)
            self.assertEqual(caught.exception.status, "BAD", text)

    def test_uid_star_in_an_empty_mailbox_selects_nothing(self):
        box = _box([])
        for text in ("*", "1:*", "*:4"):
            self.assertEqual(box.uids_for(SequenceSet.parse(text), uid=True), [], text)

    def test_star_is_the_last_message(self):
        box = _box([3, 7, 9])
        self.assertEqual(box.uids_for(SequenceSet.parse("*"), uid=False), [9])
        self.assertEqual(box.uids_for(SequenceSet.parse("2:*"), uid=False), [7, 9])
        self.assertEqual(box.uids_for(SequenceSet.parse("*:2"), uid=False), [7, 9])
        self.assertEqual(box.uids_for(SequenceSet.parse("1,*"), uid=False), [3, 9])

    def test_a_message_number_past_the_last_is_bad(self):
        box = _box([3, 7, 9])
        for text in ("4", "2:4", "1,5:*"):
            with self.assertRaises(IMAPError) as caught:
                box.uids_for(SequenceSet.parse(text), uid=False)
            self.assertEqual(
                (caught.exception.status, caught.exception.text),
                ("BAD", "No such message (the mailbox has 3)"),
                text,
            )

    def test_uid_star_is_the_highest_uid_even_past_it(self):
        """RFC 3501 §6.4.8: ``n:*`` includes the highest UID even when n is larger."""
        box = _box([3, 7, 9])
        self.assertEqual(box.uids_for(SequenceSet.parse("*"), uid=True), [9])
        self.assertEqual(box.uids_for(SequenceSet.parse("8:*"), uid=True), [9])
        self.assertEqual(box.uids_for(SequenceSet.parse("100:*"), uid=True), [9])
        self.assertEqual(box.uids_for(SequenceSet.parse("1:7"), uid=True), [3, 7])
        self.assertEqual(box.uids_for(SequenceSet.parse("4:6"), uid=True), [])

    def test_star_still_names_a_message_waiting_to_be_expunged(self):
        box = _box([3, 7, 9])
        box.apply(_changes(expunged=[9]), allow_expunge=False)
        self.assertEqual(box.uids_for(SequenceSet.parse("*"), uid=False), [9])
        box.apply(_changes(), allow_expunge=True)
        self.assertEqual(box.uids_for(SequenceSet.parse("*"), uid=False), [7])
