from danmaku.cli.main import main

main()
