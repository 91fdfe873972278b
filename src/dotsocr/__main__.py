from dotsocr.cli import main

main()
