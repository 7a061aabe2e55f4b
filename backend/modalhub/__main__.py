from modalhub.cli import main

main()
