from lmdistill.cli import main

main()
