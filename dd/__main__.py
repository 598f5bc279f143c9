from dd.cli import main

main()
