from xnat_downloader.cli.main import main

raise SystemExit(main())
