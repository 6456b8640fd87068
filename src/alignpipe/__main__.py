from alignpipe.cli import main

main()
