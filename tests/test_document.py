"""The document's images are immutable, so history and generation requests share them instead of copying."""
from __future__ import annotations

import numpy as np
import pytest

from app.core.document import Document, is_immutable, read_only
from app.core.geometry import Rect
from app.core.layers import Layer
from app.engine.request import GenerationRequest, JobKind


def _image(value: int = 10) -> np.ndarray:
    return np.full((32, 48, 3), value, np.uint8)


def test_document_images_cannot_be_written_in_place():
    doc = Document.from_image(_image())
    with pytest.raises(ValueError):
        doc.image[0, 0] = 255
    doc.restore(doc.snapshot())
    doc.layers = doc.layers.added(Layer(0, "top", _image(20)[:4, :4], 2, 3))   # a new layer: frozen too
    assert not doc.image.flags.writeable and int(doc.image[3, 2, 0]) == 20 and int(doc.image[0, 0, 0]) == 10


def test_a_shared_composite_is_never_changed_in_place():
    doc = Document.from_image(_image())
    held = doc.shared_image()                    # a running job holds it
    doc.layers = doc.layers.added(Layer(0, "top", _image(20)[:4, :4], 0, 0))
    assert int(doc.image[0, 0, 0]) == 20 and int(held[0, 0, 0]) == 10
    mine = doc.image                             # not shared: the next change may reuse its memory
    doc.layers = doc.layers.changed(doc.layers.layers[-1].id, visible=False)
    assert int(doc.image[0, 0, 0]) == 10 and doc.image is mine


def test_a_request_shares_a_document_image_and_copies_anything_writable():
    doc = Document.from_image(_image())
    doc.mask[4:8, 4:8] = 255
    request = GenerationRequest(JobKind.FILL, doc.image, doc.mask)
    assert request.image is doc.image                    # no copy of a possibly huge image
    assert request.mask is not doc.mask                  # the mask is painted in place: copied
    doc.mask[:] = 0
    assert request.mask.any()
    loose = _image(30)
    held = GenerationRequest(JobKind.FILL, loose, doc.mask | 255)
    loose[:] = 0                                         # the caller's array changes after the job started
    assert int(held.image[0, 0, 0]) == 30


@pytest.mark.parametrize("make, immutable", [
    (lambda: read_only(_image()), True),
    (lambda: np.frombuffer(bytes(12), np.uint8).reshape(2, 2, 3), True),
    (lambda: _image(), False),
    (lambda: _view_of_writable(), False),
    (lambda: np.frombuffer(bytearray(12), np.uint8).reshape(2, 2, 3), False),
])
def test_only_arrays_nobody_can_write_count_as_immutable(make, immutable):
    assert is_immutable(make()) is immutable


def _view_of_writable() -> np.ndarray:
    view = _image()[2:10]
    view.setflags(write=False)                 # read-only view, but its base can still be written
    return view


def test_read_only_keeps_the_pixels_and_a_view_gets_its_own_copy():
    base = _image(7)
    view = base[:, :10]
    frozen = read_only(view)
    assert not frozen.flags.writeable and frozen.shape == (32, 10, 3) and int(frozen[0, 0, 0]) == 7
    base[:] = 0
    assert int(frozen[0, 0, 0]) == 7
    assert Rect(0, 0, 48, 32) == Document.from_image(base).image_rect


def test_a_read_only_view_of_pixels_someone_else_owns_is_copied():
    base = _image(5)
    view = base[:, :]
    view.setflags(write=False)
    frozen = read_only(view)
    base[:] = 0
    assert frozen is not view and int(frozen[0, 0, 0]) == 5 and not frozen.flags.writeable


def test_a_shared_mask_is_never_written_and_edits_work_on_one_copy():
    doc = Document.from_image(_image())
    doc.mask[2:4, 2:4] = 255
    shared = doc.shared_mask()
    assert doc.has_mask() and not shared.flags.writeable
    before = doc.begin_mask_edit()                 # an edit after a request took the mask
    assert before is shared and doc.mask is not shared and doc.mask.flags.writeable
    doc.mask[0, 0] = 255
    assert shared[0, 0] == 0 and doc.editable_mask() is doc.mask     # no second copy
    fresh = doc.begin_mask_edit()                  # not shared: the undo copy is a copy
    assert fresh is not doc.mask and np.array_equal(fresh, doc.mask)
    doc.mask[...] = 0
    assert not doc.has_mask()


def test_a_released_composite_is_updated_in_place_and_a_held_one_never():
    doc = Document.from_image(_image())
    first = doc.shared_image()
    second = doc.shared_image()                      # two holders: a job and a selection
    doc.release_image(first)
    doc.layers = doc.layers.added(Layer(0, "top", _image(20)[:4, :4], 0, 0))
    assert int(second[0, 0, 0]) == 10 and doc.image is not second        # still held: a new array
    mine = doc.image
    held = doc.shared_image()
    doc.release_image(held)
    doc.layers = doc.layers.changed(doc.layers.layers[-1].id, visible=False)
    assert doc.image is mine and int(mine[0, 0, 0]) == 10                # released: updated in place
