"""The process's lock renewer thread: an item is renewed when it falls due
even when it is added while the thread sleeps towards a later one, and an
item removed before then is not renewed."""

from __future__ import annotations

import threading

from triggers.locking import _Renewer


class Item:
    """Something renewable that tells when it is renewed."""

    def __init__(self) -> None:
        self.renewed = threading.Event()

    def renew(self) -> None:
        self.renewed.set()


def test_an_item_due_before_the_thread_would_wake_is_renewed_when_due():
    renewer = _Renewer()
    # Given the thread asleep towards an item due in a minute
    later = Item()
    renewer.add(later, 60)
    # When an item due much sooner is added
    soon = Item()
    renewer.add(soon, 0.05)
    # Then it is renewed (again and again, while held), the other one not yet
    assert soon.renewed.wait(10)
    soon.renewed.clear()
    assert soon.renewed.wait(10)
    assert not later.renewed.is_set()
    renewer.remove(soon)
    renewer.remove(later)


def test_an_item_removed_before_it_is_due_is_not_renewed():
    renewer = _Renewer()
    # Given an item removed as soon as it was added
    gone = Item()
    renewer.add(gone, 0.02)
    renewer.remove(gone)
    # When an item due after it has been renewed
    kept = Item()
    renewer.add(kept, 0.1)
    assert kept.renewed.wait(10)
    renewer.remove(kept)
    # Then the removed one never was
    assert not gone.renewed.is_set()


def test_many_items_added_and_removed_from_threads_at_once_are_each_renewed_while_held():
    renewer = _Renewer()
    items = [Item() for _ in range(64)]

    def hold(item: Item) -> None:
        renewer.add(item, 0.05)
        assert item.renewed.wait(10)
        renewer.remove(item)

    threads = [threading.Thread(target=hold, args=(item,)) for item in items]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert all(item.renewed.is_set() for item in items)
