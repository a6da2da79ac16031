from spelltransfer.cli import main

main()
