import pytest
from hypothesis import given
from hypothesis import strategies as st

from dotsocr.document import select_pages
from dotsocr.document.selection import as_ranges
from dotsocr.errors import PageSelectionError


@pytest.mark.parametrize(
    ("spec", "count", "expected"),
    [
        (None, 3, [0, 1, 2]),
        ("all", 2, [0, 1]),
        ("1-3,7", 10, [0, 1, 2, 6]),
        ("7, 1-2 ,2", 10, [0, 1, 6]),
        ("5-", 7, [4, 5, 6]),
        ("-2", 7, [0, 1]),
        ("3-99", 5, [2, 3, 4]),
    ],
)
def test_selections(spec, count, expected):
    assert select_pages(spec, count) == expected


@pytest.mark.parametrize(
    ("spec", "count", "fragment"),
    [
        ("9", 7, "page 9 does not exist: the document has 7"),
        ("0", 7, "page 0 does not exist"),
        ("a-b", 7, "use numbers and ranges"),
        ("3-1", 7, "bad page range"),
        ("8-9", 7, "keeps no page"),
        ("1,,2", 7, "use numbers and ranges"),
    ],
)
def test_bad_selections_name_the_file_and_the_problem(spec, count, fragment):
    with pytest.raises(PageSelectionError) as info:
        select_pages(spec, count, "scan.pdf")
    assert str(info.value).startswith("scan.pdf: ")
    assert fragment in str(info.value)


@pytest.mark.parametrize(
    ("numbers", "expected"),
    [
        ([], ""),
        ([4], "4"),
        ([1, 2, 3, 7], "1-3,7"),
        ([7, 3, 1, 2], "1-3,7"),  # any order in, sorted out
        ([1, 3, 5], "1,3,5"),
        ([2, 3, 5, 6, 7, 10], "2-3,5-7,10"),
    ],
)
def test_as_ranges_writes_page_numbers_as_people_do(numbers, expected):
    """How a job's status shows the pages it reads (files[].selected)."""
    assert as_ranges(numbers) == expected


@st.composite
def _pages_of_a_document(draw):
    count = draw(st.integers(min_value=1, max_value=60))
    # Not empty: "" reads back as every page, and a job never selects no page of a file
    # it can open (a refused file has "" and reads nothing).
    numbers = draw(st.sets(st.integers(min_value=1, max_value=count), min_size=1))
    return count, numbers


@given(_pages_of_a_document())
def test_as_ranges_reads_back_as_the_same_pages(document):
    """What ``selected`` says can be sent back as ``pages`` and selects the same pages."""
    count, numbers = document
    spec = as_ranges(sorted(numbers))
    assert select_pages(spec, count) == sorted(n - 1 for n in numbers)
    assert as_ranges(list(numbers)) == spec  # the order given does not matter
