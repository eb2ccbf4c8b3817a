from minixnat.cli import main

raise SystemExit(main())
