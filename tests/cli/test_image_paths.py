"""`olla.image_paths`: image paths found in a prompt as Ollama's CLI finds them (its own cases in
cmd/interactive_test.go, POSIX ones), with the file system a set of names."""

from __future__ import annotations

from olla.image_paths import find_image_paths, normalize, remove_paths, split_image_paths

HOME = "/home/me"


def split(text: str, *files: str) -> tuple[str, list[str]]:
    return split_image_paths(text, set(files).__contains__, HOME)


def test_ollamas_several_paths_escaped_unescaped_and_quoted() -> None:
    text = (
        " some preamble \n"
        " ./relative\\ path/one.png inbetween1 ./not a valid two.jpg inbetween2 ./1.svg\n"
        "/unescaped space /three.jpeg inbetween3 /valid\\ path/dir/four.png "
        '"./quoted with spaces/five.JPG\n'
        "/unescaped space /six.webp inbetween6 /valid\\ path/dir/seven.WEBP"
    )
    files = (
        "./relative path/one.png",
        "./not a valid two.jpg",
        "/unescaped space /three.jpeg",
        "/valid path/dir/four.png",
        "./quoted with spaces/five.JPG",
        "/six.webp",  # "/unescaped space /six.webp" is no file: the shorter path is
        "/valid path/dir/seven.WEBP",
        "./1.svg",  # a file, but not an image's extension
    )
    rest, paths = split(text, *files)
    assert paths == [f for f in files if not f.endswith(".svg")]
    assert rest == (
        "some preamble \n  inbetween1  inbetween2 ./1.svg\n"
        ' inbetween3  "\n/unescaped space  inbetween6'
    )


def test_a_path_in_single_or_double_quotes_goes_with_its_quotes() -> None:
    assert split("before '/tmp/img.jpg' after", "/tmp/img.jpg") == (
        "before  after",
        ["/tmp/img.jpg"],
    )
    assert split('before "/tmp/my img.jpg" after', "/tmp/my img.jpg") == (
        "before  after",
        ["/tmp/my img.jpg"],
    )
    # a quote on one side only stays
    assert split("'/tmp/img.jpg after", "/tmp/img.jpg") == ("' after", ["/tmp/img.jpg"])


def test_a_path_that_names_no_file_stays_text() -> None:
    text = "describe ./missing.png and /etc/nothing.jpeg please"
    assert split(text) == (text, [])
    assert split(text, "./missing.png") == (
        "describe  and /etc/nothing.jpeg please",
        ["./missing.png"],
    )


def test_the_longest_candidate_that_names_a_file_wins() -> None:
    # Ollama's one lazy match would be "/tmp/x and ./cat.png" and miss the file
    assert split("compare /tmp/x and ./cat.png", "./cat.png") == (
        "compare /tmp/x and",
        ["./cat.png"],
    )
    assert split("see ./my cat.png now", "./my cat.png", "./cat.png") == (
        "see  now",
        ["./my cat.png"],
    )


def test_home_escapes_and_where_a_path_may_start() -> None:
    assert split("~/Pictures/cat.png what is it", "/home/me/Pictures/cat.png") == (
        "what is it",
        ["/home/me/Pictures/cat.png"],
    )
    assert split("../up.PNG", "../up.PNG") == ("", ["../up.PNG"])
    assert normalize("/a\\ \\(1\\)\\ \\$x\\\\.png", HOME) == "/a (1) $x\\.png"
    # inside a word or a URL a slash starts no path; a path is typed on one line
    assert split("http://host/a.png x/b.png", "/a.png", "//host/a.png", "/b.png")[1] == []
    assert split("./a\nb.png", "./a\nb.png")[1] == []
    # the extension ends a word
    assert split("./a.pngs", "./a.pngs", "./a.png")[1] == []


def test_the_same_image_twice_is_two_images_and_spans_are_in_order() -> None:
    found = find_image_paths("/a.png vs /a.png", {"/a.png"}.__contains__, HOME)
    assert [(p.path, p.start, p.end) for p in found] == [("/a.png", 0, 6), ("/a.png", 10, 16)]
    assert remove_paths("/a.png vs /a.png", found) == "vs"
