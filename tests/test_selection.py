import pytest

from dotsocr.document import select_pages
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
